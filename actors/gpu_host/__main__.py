from actors.gpu_host.actor import GpuHost
from bus.runner import main

if __name__ == "__main__":
    main(GpuHost)
