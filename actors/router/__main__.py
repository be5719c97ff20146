from actors.router.actor import Router
from bus.runner import main

main(Router)
