from actors.rotator.actor import Rotator
from bus.runner import main

main(Rotator)
