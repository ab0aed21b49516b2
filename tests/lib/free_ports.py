"""Prints N loopback ports that are free for both UDP and TCP right now.

The script tests start servers on fixed ports they pick first. Ports the kernel hands out for
bind(0) come from the ephemeral range, which every outgoing connection of concurrent work also
draws from, so such a port can be taken between the pick and the server's bind (seen as
"Address already in use"). These picks come from the 12,000 ports below the ephemeral range,
which nothing takes unasked; each is bound (UDP and TCP) while the rest are chosen.
Usage: python3 free_ports.py N
"""
import random
import socket
import sys


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def main():
    want = int(sys.argv[1])
    high = ephemeral_low()
    low = max(1024, high - 12000)
    held, ports = [], []
    for _ in range(10000):
        if len(ports) == want:
            break
        port = random.randrange(low, high)
        if port in ports:
            continue
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind(("127.0.0.1", port))
            t.bind(("127.0.0.1", port))
        except OSError:
            u.close()
            t.close()
            continue
        held += [u, t]
        ports.append(port)
    if len(ports) < want:
        sys.exit(f"free_ports: found only {len(ports)} of {want} free ports in {low}..{high}")
    print(*ports)


main()
