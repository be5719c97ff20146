from actors.gateway.actor import Gateway
from bus.runner import main

main(Gateway)
