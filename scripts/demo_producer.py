#!/usr/bin/env python3
"""Demo producer for session-log-gateway.

Generates realistic NetRaven-style session logs (device connections, commands
and their Cisco IOS output, warnings, errors, job status) for a few jobs and
POSTs them as JSON arrays to ``{url}/api/v1/logs``.

Runs until killed, or with ``--once N`` sends N records per job and exits
(exit status 0 only if every record was accepted).

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from datetime import datetime, timezone
from typing import Any, Deque, Dict, Iterator, List, Optional

# ---------------------------------------------------------------------------
# Fake inventory
# ---------------------------------------------------------------------------

DEVICES = [
    {"id": 1, "hostname": "core-sw-01", "ip": "10.0.0.11", "model": "WS-C3850-48P",
     "image": "CAT3K_CAA-UNIVERSALK9-M", "version": "16.12.4", "kind": "switch"},
    {"id": 2, "hostname": "edge-rtr-02", "ip": "10.0.0.12", "model": "ISR4331/K9",
     "image": "ISR4300-UNIVERSALK9-M", "version": "17.3.5", "kind": "router"},
    {"id": 3, "hostname": "dist-sw-03", "ip": "10.0.0.13", "model": "WS-C2960X-48FPD-L",
     "image": "C2960X-UNIVERSALK9-M", "version": "15.2(7)E6", "kind": "switch"},
    {"id": 4, "hostname": "access-sw-04", "ip": "10.0.0.14", "model": "WS-C2960X-24PS-L",
     "image": "C2960X-UNIVERSALK9-M", "version": "15.2(7)E6", "kind": "switch"},
    {"id": 5, "hostname": "wan-rtr-05", "ip": "10.0.0.15", "model": "CISCO2911/K9",
     "image": "C2900-UNIVERSALK9-M", "version": "15.7(3)M8", "kind": "router"},
    {"id": 6, "hostname": "dc-fw-06", "ip": "10.0.0.16", "model": "ISR4451-X/K9",
     "image": "ISR4400-UNIVERSALK9-M", "version": "17.6.4", "kind": "router"},
]

ANSI_GREEN = "\x1b[32m"
ANSI_RED = "\x1b[31m"
ANSI_YELLOW = "\x1b[33m"
ANSI_BOLD = "\x1b[1m"
ANSI_RESET = "\x1b[0m"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def level(name: str, rng: random.Random) -> str:
    """NetRaven mostly logs upper-case levels, but not always."""
    return name if rng.random() < 0.8 else name.lower()


# ---------------------------------------------------------------------------
# Device output generators
# ---------------------------------------------------------------------------


def out_show_version(dev: Dict[str, Any], rng: random.Random, color: bool) -> str:
    uptime = f"{rng.randint(1, 120)} weeks, {rng.randint(0, 6)} days, {rng.randint(0, 23)} hours, {rng.randint(0, 59)} minutes"
    serial = "FOC" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(8))
    title = f"Cisco IOS Software, {dev['model'].split('/')[0]} Software ({dev['image']}), Version {dev['version']}, RELEASE SOFTWARE (fc2)"
    if color:
        title = ANSI_BOLD + title + ANSI_RESET
    lines = [
        title,
        "Technical Support: http://www.cisco.com/techsupport",
        "Copyright (c) 1986-2023 by Cisco Systems, Inc.",
        "Compiled Tue 14-Mar-23 10:12 by prod_rel_team",
        "",
        "ROM: Bootstrap program is IOS-XE ROMMON" if dev["kind"] == "router" else "BOOTLDR: C2960X Boot Loader (C2960X-HBOOT-M) Version 15.2(7r)E",
        "",
        f"{dev['hostname']} uptime is {uptime}",
        "System returned to ROM by power-on",
        f'System image file is "flash:{dev["image"].lower()}.{dev["version"]}.bin"',
        "Last reload reason: Reload command",
        "",
        f"cisco {dev['model']} (MPC8572) processor (revision A0) with {rng.choice([524288, 1048576, 4194304])}K bytes of memory.",
        f"Processor board ID {serial}",
        f"{rng.choice([1, 2, 4])} Virtual Ethernet interface",
        f"{rng.choice([24, 48, 4])} Gigabit Ethernet interfaces",
        "The password-recovery mechanism is enabled.",
        "",
        "512K bytes of flash-simulated non-volatile configuration memory.",
        f"Base ethernet MAC Address       : 00:1A:2B:{rng.randint(0, 255):02X}:{rng.randint(0, 255):02X}:{rng.randint(0, 255):02X}",
        f"Motherboard serial number       : {serial}",
        f"Model number                    : {dev['model']}",
        "",
        "Configuration register is 0x2102",
    ]
    return "\n".join(lines)


def out_ip_int_brief(dev: Dict[str, Any], rng: random.Random, color: bool) -> str:
    rows = ["Interface              IP-Address      OK? Method Status                Protocol"]
    prefix = "GigabitEthernet1/0/" if dev["kind"] == "switch" else "GigabitEthernet0/0/"
    count = 12 if dev["kind"] == "switch" else 4
    for i in range(1, count + 1):
        up = rng.random() > 0.3
        ip = f"10.{dev['id']}.{i}.1" if (dev["kind"] == "router" or i == 1) else "unassigned"
        status = "up" if up else "down"
        proto = status
        if color:
            c = ANSI_GREEN if up else ANSI_RED
            status_s = f"{c}{status:<21}{ANSI_RESET}"
            proto_s = f"{c}{proto}{ANSI_RESET}"
        else:
            status_s = f"{status:<21}"
            proto_s = proto
        rows.append(f"{prefix + str(i):<22} {ip:<15} YES {'NVRAM':<6} {status_s} {proto_s}")
    rows.append(f"{'Loopback0':<22} {'10.255.0.' + str(dev['id']):<15} YES NVRAM  {'up':<21} up")
    rows.append(f"{'Vlan1':<22} {'unassigned':<15} YES unset  {'administratively down':<21} down")
    return "\n".join(rows)


def out_inventory(dev: Dict[str, Any], rng: random.Random, color: bool) -> str:
    sn = lambda: "FOC" + str(rng.randint(10000000, 99999999))  # noqa: E731
    return "\n".join([
        f'NAME: "1", DESCR: "{dev["model"]}"',
        f'PID: {dev["model"]:<18}, VID: V02  , SN: {sn()}',
        "",
        'NAME: "Power Supply 1", DESCR: "Power Supply Module"',
        f"PID: PWR-C1-350WAC    , VID: V01  , SN: {sn()}",
        "",
        'NAME: "GigabitEthernet1/1/1", DESCR: "1000BaseSX SFP"',
        f"PID: GLC-SX-MMD       , VID: V01  , SN: {sn()}",
    ])


def out_proc_cpu(dev: Dict[str, Any], rng: random.Random, color: bool, cpu: Optional[int] = None) -> str:
    cpu = cpu if cpu is not None else rng.randint(3, 35)
    head = f"CPU utilization for five seconds: {cpu}%/{max(0, cpu - 3)}%; one minute: {max(1, cpu - 5)}%; five minutes: {max(1, cpu - 8)}%"
    if color and cpu > 80:
        head = ANSI_YELLOW + head + ANSI_RESET
    lines = [head, " PID Runtime(ms)     Invoked      uSecs   5Sec   1Min   5Min TTY Process"]
    procs = ["Chunk Manager", "Load Meter", "Check heaps", "IP Input", "ARP Input", "CDP Protocol",
             "Spanning Tree", "SNMP ENGINE", "HSRP Common", "OSPF-1 Hello"]
    for pid, name in enumerate(procs, start=1):
        lines.append(
            f"{pid:>4} {rng.randint(10, 9_999_999):>12} {rng.randint(100, 9_999_999):>11} "
            f"{rng.randint(1, 999):>10} {rng.uniform(0, 5):5.2f}% {rng.uniform(0, 5):5.2f}% {rng.uniform(0, 5):5.2f}%   0 {name}"
        )
    return "\n".join(lines)


def out_running_config(dev: Dict[str, Any], rng: random.Random, color: bool) -> str:
    """A long (~200 lines) running-config."""
    h = dev["hostname"]
    lines = [
        "Building configuration...",
        "",
        f"Current configuration : {rng.randint(8000, 16000)} bytes",
        "!",
        f"! Last configuration change at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} UTC Mon Mar 4 2024 by netraven",
        "!",
        f"version {dev['version'].split('(')[0]}",
        "service timestamps debug datetime msec",
        "service timestamps log datetime msec",
        "service password-encryption",
        "!",
        f"hostname {h}",
        "!",
        "boot-start-marker",
        "boot-end-marker",
        "!",
        "logging buffered 64000 informational",
        "enable secret 9 $9$J4kdH7s/abcXYZ$9ZC0yqeBpKcYtXxQzRn0XW0mG9hQ8sS1p6bJ6m2u0Xk",
        "!",
        "aaa new-model",
        "aaa authentication login default group tacacs+ local",
        "aaa authorization exec default group tacacs+ local",
        "!",
        "clock timezone UTC 0 0",
        "ip domain name corp.example.net",
        "ip name-server 10.0.0.53",
        "!",
        "username netraven privilege 15 secret 9 $9$Hq2w9sdf8sd$U7Mw0f2H1cZr4yW5Ih2oP2yK1lQ9rV8sT3aB7eC6dE5",
        "!",
        "spanning-tree mode rapid-pvst",
        "spanning-tree extend system-id",
        "!",
    ]
    for vlan, name in [(10, "USERS"), (20, "VOICE"), (30, "PRINTERS"), (40, "WIFI"), (99, "MGMT")]:
        lines += [f"vlan {vlan}", f" name {name}", "!"]
    ports = 24 if dev["kind"] == "switch" else 8
    prefix = "GigabitEthernet1/0/" if dev["kind"] == "switch" else "GigabitEthernet0/0/"
    for i in range(1, ports + 1):
        lines.append(f"interface {prefix}{i}")
        if i == 1:
            lines += [" description UPLINK-TO-CORE", " switchport mode trunk",
                      " switchport trunk allowed vlan 10,20,30,40,99"]
        else:
            vlan = rng.choice([10, 10, 10, 20, 30, 40])
            lines += [f" description user-port-{i}", " switchport mode access",
                      f" switchport access vlan {vlan}", " spanning-tree portfast"]
            if rng.random() < 0.2:
                lines.append(" shutdown")
        lines.append("!")
    lines += [
        "interface Vlan99",
        f" ip address 10.99.0.{dev['id']} 255.255.255.0",
        "!",
        "ip default-gateway 10.99.0.254",
        "ip forward-protocol nd",
        "no ip http server",
        "no ip http secure-server",
        "ip ssh version 2",
        "!",
        "ip access-list standard SNMP-RO",
        " permit 10.0.0.0 0.0.0.255",
        " deny   any log",
        "!",
        "logging host 10.0.0.50",
        "snmp-server community <removed> RO SNMP-RO",
        "snmp-server location DC1 Row 3 Rack 12",
        "snmp-server contact noc@example.net",
        "!",
        "tacacs server TAC1",
        " address ipv4 10.0.0.49",
        " key 7 <removed>",
        "!",
        "banner motd ^C",
        f"  {h} -- authorised access only",
        "^C",
        "!",
        "line con 0",
        " exec-timeout 15 0",
        " logging synchronous",
        "line vty 0 4",
        " exec-timeout 15 0",
        " transport input ssh",
        "line vty 5 15",
        " transport input ssh",
        "!",
        "ntp server 10.0.0.123 prefer",
        "ntp server 10.0.0.124",
        "!",
        "end",
    ]
    return "\n".join(lines)


COMMANDS = [
    ("show version", out_show_version, 1.0),
    ("show ip interface brief", out_ip_int_brief, 0.9),
    ("show inventory", out_inventory, 0.5),
    ("show processes cpu sorted", out_proc_cpu, 0.4),
    ("show running-config", out_running_config, 0.35),
]

# ---------------------------------------------------------------------------
# Per-job record stream
# ---------------------------------------------------------------------------


def rec(job_id: int, device_id: Optional[int], lvl: str, log_type: str, source: str,
        message: str, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    r: Dict[str, Any] = {
        "job_id": job_id,
        "device_id": device_id,
        "level": lvl,
        "log_type": log_type,
        "source": source,
        "message": message,
        "timestamp": "",  # filled in when the record is actually sent
    }
    if meta is not None:
        r["meta"] = meta
    return r


def job_stream(job_id: int, rng: random.Random) -> Iterator[Dict[str, Any]]:
    """Endless stream of records for one job: run after run of a backup job."""
    run = 0
    while True:
        run += 1
        devices = rng.sample(DEVICES, rng.randint(2, 4))
        sim_ms = 0  # simulated run time (sum of connection/command durations)
        yield rec(job_id, None, level("INFO", rng), "job", "worker.runner",
                  f"Job {job_id} run {run} started: config backup of {len(devices)} devices "
                  f"({', '.join(d['hostname'] for d in devices)})",
                  {"status": "RUNNING", "run": run, "device_count": len(devices)})
        ok = failed = 0
        for dev in devices:
            did, host, ip = dev["id"], dev["hostname"], dev["ip"]
            yield rec(job_id, did, level("INFO", rng), "connection", "worker.device_connector",
                      f"Connecting to {ip} via SSH (port 22) as netraven",
                      {"host": ip, "port": 22, "hostname": host})
            if rng.random() < 0.08:
                yield rec(job_id, did, level("ERROR", rng), "connection", "worker.device_connector",
                          f"Authentication failed for {host}",
                          {"host": ip, "error": "NetmikoAuthenticationException", "attempt": 1})
                yield rec(job_id, did, level("WARNING", rng), "job", "worker.executor",
                          f"Skipping {host}: device unreachable or credentials rejected",
                          {"status": "FAILED"})
                failed += 1
                continue
            if rng.random() < 0.05:
                yield rec(job_id, did, level("WARNING", rng), "connection", "worker.device_connector",
                          f"Connection to {ip} timed out after 10s, retrying (attempt 2/3)",
                          {"host": ip, "attempt": 2})
            yield rec(job_id, did, level("INFO", rng), "connection", "worker.device_connector",
                      f"Connected to {host} ({dev['model']}, IOS {dev['version']}), prompt '{host}#'",
                      {"host": ip, "duration_ms": (ms := rng.randint(300, 2500))})
            sim_ms += ms
            yield rec(job_id, did, level("INFO", rng), "session", "worker.executor", "$ terminal length 0",
                      {"command": "terminal length 0"})
            for cmd, fn, p in COMMANDS:
                if rng.random() > p:
                    continue
                color = rng.random() < 0.25
                yield rec(job_id, did, level("INFO", rng), "session", "worker.executor", f"$ {cmd}",
                          {"command": cmd})
                high_cpu = None
                if fn is out_proc_cpu and rng.random() < 0.3:
                    high_cpu = rng.randint(82, 99)
                    output = out_proc_cpu(dev, rng, color, high_cpu)
                else:
                    output = fn(dev, rng, color)
                ms = rng.randint(40, 3000)
                sim_ms += ms
                yield rec(job_id, did, level("INFO", rng), "session", "worker.executor", output,
                          {"command": cmd, "duration_ms": ms,
                           "bytes": len(output.encode()), "lines": output.count("\n") + 1,
                           "ansi": color})
                if high_cpu is not None:
                    yield rec(job_id, did, level("WARNING", rng), "session", "worker.monitor",
                              f"High CPU {high_cpu}% on {host}", {"cpu_percent": high_cpu})
                if cmd == "show running-config" and rng.random() < 0.3:
                    changed = rng.randint(1, 12)
                    yield rec(job_id, did, level("WARNING", rng), "session", "worker.differ",
                              f"Configuration drift on {host}: {changed} line{'s' if changed > 1 else ''} "
                          "changed since last backup",
                              {"changed_lines": changed})
            if rng.random() < 0.04:
                yield rec(job_id, did, level("ERROR", rng), "session", "worker.executor",
                          f"Command 'show environment all' failed on {host}: % Invalid input detected at '^' marker.",
                          {"command": "show environment all"})
            commit = "%07x" % rng.getrandbits(28)
            yield rec(job_id, did, level("INFO", rng), "job", "worker.git",
                      f"Saved configuration of {host} to repository (commit {commit})",
                      {"commit": commit})
            yield rec(job_id, did, level("INFO", rng), "connection", "worker.device_connector",
                      f"Disconnected from {host}", {"host": ip})
            ok += 1
        status = "COMPLETED_SUCCESS" if failed == 0 else "COMPLETED_WITH_ERRORS"
        yield rec(job_id, None, level("INFO" if failed == 0 else "WARNING", rng), "job", "worker.runner",
                  f"Job {job_id} run {run} finished: {ok} succeeded, {failed} failed in {sim_ms / 1000:.1f}s",
                  {"status": status, "run": run, "succeeded": ok, "failed": failed,
                   "duration_ms": sim_ms})


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


class Sender:
    def __init__(self, url: str, timeout: float, verbose: bool) -> None:
        self.endpoint = url.rstrip("/") + "/api/v1/logs"
        self.timeout = timeout
        self.verbose = verbose
        self.down = False  # last attempt was a connection error (avoid log spam)

    def post(self, batch: List[Dict[str, Any]]) -> str:
        """Returns "ok", "retry" (connection/5xx problem) or "drop" (4xx: batch rejected)."""
        data = json.dumps(batch).encode()
        req = urllib.request.Request(self.endpoint, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(2000)
            if self.down:
                print(f"[producer] gateway reachable again at {self.endpoint}", file=sys.stderr)
                self.down = False
            if self.verbose:
                print(f"[producer] job {batch[0]['job_id']}: sent {len(batch)} records -> "
                      f"{resp.status} {body[:200].decode(errors='replace')}", file=sys.stderr)
            return "ok"
        except urllib.error.HTTPError as e:
            try:
                body = e.read(500).decode(errors="replace").strip()
            except Exception:  # noqa: BLE001
                body = ""
            print(f"[producer] HTTP {e.code} from {self.endpoint} ({len(batch)} records): {body[:300]}",
                  file=sys.stderr)
            return "retry" if e.code >= 500 or e.code == 429 else "drop"
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            if not self.down:
                print(f"[producer] cannot reach {self.endpoint}: {reason} (will keep retrying)",
                      file=sys.stderr)
                self.down = True
            return "retry"


def parse_jobs(s: str) -> List[int]:
    try:
        jobs = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs must be a comma-separated list of integers, got {s!r}")
    if not jobs:
        raise argparse.ArgumentTypeError("--jobs must not be empty")
    return jobs


def run_once(args: argparse.Namespace, sender: Sender, streams: Dict[int, Iterator[Dict[str, Any]]]) -> int:
    failures = 0
    for job_id, stream in streams.items():
        remaining = args.once
        sent = 0
        while remaining > 0:
            n = min(remaining, args.max_batch)
            batch = []
            for _ in range(n):
                r = next(stream)
                r["timestamp"] = now_iso()
                batch.append(r)
            deadline = time.monotonic() + args.retry_timeout
            while True:
                result = sender.post(batch)
                if result != "retry" or time.monotonic() >= deadline:
                    break
                time.sleep(1)
            if result != "ok":
                failures += 1
                print(f"[producer] job {job_id}: failed to send {n} records", file=sys.stderr)
                break
            sent += n
            remaining -= n
        print(f"[producer] job {job_id}: sent {sent}/{args.once} records")
    return 1 if failures else 0


def run_forever(args: argparse.Namespace, sender: Sender, streams: Dict[int, Iterator[Dict[str, Any]]]) -> int:
    pending: Dict[int, Deque[Dict[str, Any]]] = {j: deque(maxlen=args.max_pending) for j in streams}
    credit: Dict[int, float] = {j: 0.0 for j in streams}
    totals: Dict[int, int] = {j: 0 for j in streams}
    last = time.monotonic()
    last_report = last
    print(f"[producer] sending to {sender.endpoint}: jobs {','.join(map(str, streams))} "
          f"at {args.rate} records/s each", file=sys.stderr)
    while True:
        now = time.monotonic()
        dt, last = now - last, now
        backoff = False
        for job_id, stream in streams.items():
            # jitter the rate a little so jobs don't move in lock-step
            credit[job_id] += args.rate * dt * rng_jitter.uniform(0.6, 1.4)
            while credit[job_id] >= 1.0:
                credit[job_id] -= 1.0
                r = next(stream)
                r["timestamp"] = now_iso()
                pending[job_id].append(r)
            q = pending[job_id]
            while q and not backoff:
                batch = [q[i] for i in range(min(len(q), args.max_batch))]
                result = sender.post(batch)
                if result == "retry":
                    backoff = True
                    break
                for _ in batch:
                    q.popleft()
                if result == "ok":
                    totals[job_id] += len(batch)
                else:  # "drop": the gateway rejected the batch; don't resend it, but back off
                    backoff = True
        if backoff:
            time.sleep(1.0)
        else:
            time.sleep(args.interval)
        if now - last_report >= 60:
            last_report = now
            print("[producer] sent so far: " + ", ".join(f"job {j}: {n}" for j, n in totals.items()),
                  file=sys.stderr)


rng_jitter = random.Random()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Produce realistic NetRaven session logs and POST them to session-log-gateway.")
    ap.add_argument("--url", default="http://127.0.0.1:8080",
                    help="gateway base URL (default: %(default)s)")
    ap.add_argument("--jobs", type=parse_jobs, default=[1, 2, 3],
                    help="comma-separated job ids (default: 1,2,3)")
    ap.add_argument("--rate", type=float, default=5.0,
                    help="records per second per job (default: %(default)s)")
    ap.add_argument("--once", type=int, metavar="N",
                    help="send N records per job, then exit (non-zero exit if any failed)")
    ap.add_argument("--interval", type=float, default=0.5,
                    help="seconds between POST rounds (default: %(default)s)")
    ap.add_argument("--max-batch", type=int, default=200,
                    help="maximum records per POST (default: %(default)s)")
    ap.add_argument("--max-pending", type=int, default=5000,
                    help="records buffered per job while the gateway is down; oldest dropped beyond "
                         "this (default: %(default)s)")
    ap.add_argument("--retry-timeout", type=float, default=30.0,
                    help="with --once: how long to keep retrying an unreachable gateway "
                         "(default: %(default)s s)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="HTTP request timeout in seconds (default: %(default)s)")
    ap.add_argument("--seed", type=int, help="random seed (for reproducible output)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every POST")
    args = ap.parse_args(argv)
    if args.rate <= 0:
        ap.error("--rate must be > 0")
    if args.once is not None and args.once < 0:
        ap.error("--once must be >= 0")
    if args.max_batch < 1:
        ap.error("--max-batch must be >= 1")

    base_seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    streams = {j: job_stream(j, random.Random(base_seed * 1000 + j)) for j in args.jobs}
    sender = Sender(args.url, args.timeout, args.verbose)
    try:
        if args.once is not None:
            return run_once(args, sender, streams)
        return run_forever(args, sender, streams)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
