"""Self-test of the test hosts (needs root): python3 chaos/harness/selftest.py

First the parts that need no root: the nemeses' grudges (majorities ring, bridge, halves)
and the history writer. Then a 3-host net: hosts reach each other and the client reaches them; a partition cuts and
heals; multicast floods over the bridge (n1 -> 224.2.2.3:54327 -> n2); libfaketime skews
a program's wall clock in a namespace; the harness process reaches a host from the client
namespace (setns); teardown leaves no namespace with the prefix.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hosts  # noqa: E402
import nemesis  # noqa: E402
from history import History  # noqa: E402
from hosts import Net, sh  # noqa: E402

PORT = 9000

# A TCP server that answers "ok" to every connection, until killed.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"ok"); c.close()
"""

CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.recv(2).decode())
except OSError as e:
    print("unreachable", e)
"""

# Join 224.2.2.3 on the host's own address (no multicast route needed), wait for one datagram.
MCAST_RECV = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("224.2.2.3", 54327))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("224.2.2.3") + socket.inet_aton(sys.argv[1]))
s.settimeout(5)
print("joined", flush=True)
try:
    data, addr = s.recvfrom(1500)
    print("got", data.decode(), addr[0], flush=True)
except socket.timeout:
    print("timeout", flush=True)
"""

MCAST_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.sendto(b"beacon", ("224.2.2.3", 54327))
"""

passed = failed = 0


def check(name: str, cond: bool, detail: str = "") -> None:
    global passed, failed
    if cond:
        passed += 1
        print(f"ok    {name}")
    else:
        failed += 1
        print(f"FAIL  {name} {detail}")


def answer(ip: str, port: int) -> bytes | str:
    """What a TCP server at ip:port says first (our servers say b"ok")."""
    try:
        with socket.create_connection((ip, port), timeout=1) as c:
            c.settimeout(1)
            return c.recv(2)
    except OSError as e:
        return str(e)


def reach(net: Net, src, dst, timeout: float = 1.0) -> bool:
    out = net.exec(src, sys.executable, "-c", CLIENT, dst.ip, str(PORT), str(timeout)).stdout
    return out.strip() == "ok"


def pure_checks() -> None:
    import json
    import random
    import tempfile

    for n in (3, 4, 5, 7):
        nodes = [f"n{k}" for k in range(1, n + 1)]
        rng = random.Random(n)
        g = nemesis.majorities_ring(nodes, rng)
        seen = {a: frozenset(m for m in nodes if m not in g[a]) for a in nodes}
        check(f"majorities-ring of {n}: every node sees a majority",
              all(len(v) > n // 2 and a in v for a, v in seen.items()), str(seen))
        check(f"majorities-ring of {n}: no two see the same majority",
              len(set(seen.values())) == n, str(seen))
        g, middle = nemesis.bridge(nodes, rng)
        sides = [a for a in nodes if a != middle]
        check(f"bridge of {n}: the middle sees all and is seen by all",
              not g[middle] and all(middle not in g[a] for a in nodes))
        check(f"bridge of {n}: each other node is cut from the far half only",
              all(len(g[a]) == len(set(g[a])) and g[a] and a not in g[a] for a in sides)
              and all(all(a in g[b] for b in g[a]) for a in sides))
        halves = nemesis.halves(nodes, rng)
        g = nemesis.complete_grudge(halves)
        check(f"halves of {n}: each side drops exactly the other",
              all(set(g[a]) == set(nodes) - set(h) for h in halves for a in h))

    with tempfile.TemporaryDirectory() as d:
        h = History(Path(d) / "history.jsonl")
        op = h.invoke(0, "register", "cas", ["1", "2"], key="k0", node="n1")
        h.nemesis("start", "kill-node", {"killed": ["n2"]})
        op.fail(error="409")
        try:
            op.ok()
            twice = False
        except RuntimeError:
            twice = True
        h.observe(1, "messages", "recv", {"id": "m1"}, node="n2")
        h.close()
        lines = [json.loads(x) for x in (Path(d) / "history.jsonl").read_text().splitlines()]
        check("history: completing an operation twice is an error", twice)
        check("history: lines in order with growing index and time",
              [x["index"] for x in lines] == [0, 1, 2, 3]
              and all(a["time"] <= b["time"] for a, b in zip(lines, lines[1:])))
        check("history: a completion repeats the invoke's fields",
              lines[2] == {**lines[0], "index": 2, "time": lines[2]["time"], "type": "fail",
                           "error": "409"}, str(lines[2]))
        check("history: nemesis line", lines[1]["process"] == "nemesis"
              and lines[1]["type"] == "info" and lines[1]["f"] == "start"
              and lines[1]["value"] == {"nemesis": "kill-node", "detail": {"killed": ["n2"]}})


def main() -> int:
    pure_checks()
    if os.geteuid() != 0:
        print("selftest: must be run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    hosts.ensure_tools()
    net = Net(3)
    servers = []
    try:
        net.create()
        n1, n2, n3 = net.hosts
        for h in net.hosts:
            p = subprocess.Popen(["ip", "netns", "exec", h.ns, sys.executable, "-c", SERVER,
                                  h.ip, str(PORT)], stdout=subprocess.PIPE, text=True)
            servers.append(p)
            p.stdout.readline()

        check("hosts reach each other",
              all(reach(net, a, b) for a in net.hosts for b in net.hosts if a is not b))
        check("the client reaches every host", all(reach(net, net.client, h) for h in net.hosts))

        net.apply_grudge({n1: [n2], n2: [n1]})
        check("partition cuts n1 -> n2", not reach(net, n1, n2))
        check("partition cuts n2 -> n1", not reach(net, n2, n1))
        check("partition leaves n1 -> n3", reach(net, n1, n3))
        check("the client reaches both sides",
              reach(net, net.client, n1) and reach(net, net.client, n2))
        root_rules = sh("iptables", "-w", "-S", "INPUT").stdout
        check("no rule in the root namespace", "198.18." not in root_rules, root_rules)
        net.heal()
        check("heal restores n1 <-> n2", reach(net, n1, n2) and reach(net, n2, n1))

        recv = subprocess.Popen(["ip", "netns", "exec", n2.ns, sys.executable, "-c", MCAST_RECV,
                                 n2.ip], stdout=subprocess.PIPE, text=True)
        recv.stdout.readline()
        net.exec(n1, sys.executable, "-c", MCAST_SEND, n1.ip)
        out = recv.communicate(timeout=10)[0].strip()
        check("multicast n1 -> 224.2.2.3:54327 reaches n2", out == f"got beacon {n1.ip}", out)

        ft = Path("/tmp") / f"{net.prefix}faketime"
        try:
            ft.write_text("-300\n")
            env = ["env", f"LD_PRELOAD={hosts.FAKETIME_LIB}", "FAKETIME_DONT_FAKE_MONOTONIC=1",
                   f"FAKETIME_TIMESTAMP_FILE={ft}", "FAKETIME_NO_CACHE=1"]
            skewed = int(net.exec(n1, *env, "date", "+%s").stdout)
            check("faketime offset -300 s in a namespace", abs(skewed - (time.time() - 300)) < 5,
                  f"{skewed} vs {time.time():.0f}")
            ft.write_text("+120\n")
            skewed = int(net.exec(n1, *env, "date", "+%s").stdout)
            check("faketime offset changed at run time", abs(skewed - (time.time() + 120)) < 5)
        finally:
            ft.unlink(missing_ok=True)

        net.enter_client()
        try:
            got = answer(n3.ip, PORT)
        finally:
            net.leave_client()
        check("the harness reaches a host from the client namespace (setns)", got == b"ok", got)
        # In the root namespace of these machines an egress proxy accepts every TCP
        # connect, so only the answer tells whether the host was reached.
        got = answer(n3.ip, PORT)
        check("back in the root namespace, the hosts are not reached", got != b"ok", got)
    finally:
        for p in servers:
            p.kill()
            p.wait()
        net.destroy()
    left = hosts.list_namespaces(net.prefix)
    check("teardown leaves no namespace with the prefix", not left, str(left))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
