"""Wait until a TCP port accepts connections (used by `make run` before stripe_setup)."""

import socket
import sys
import time


def wait(host: str, port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    if not wait(host, port):
        sys.exit(f"{host}:{port} did not open within 30 s")
