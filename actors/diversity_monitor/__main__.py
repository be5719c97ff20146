from actors.diversity_monitor.actor import DiversityMonitor
from bus.runner import main

main(DiversityMonitor)
