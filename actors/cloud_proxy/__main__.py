"""``python -m actors.cloud_proxy --config <profile>``."""

from actors.cloud_proxy.actor import CloudProxy
from bus.runner import main

if __name__ == "__main__":
    main(CloudProxy)
