"""Env files and unit files that systemd reads the same (or not): the cases both the unit and the testbed test use."""

from __future__ import annotations

# (text, the environment systemd gives the service); both systemd versions read these alike
ENV_CASES = [
    ("A=1\n", {"A": "1"}),
    ("  A = 1  \n", {"A": "1"}),  # whitespace around the key and after the value
    ('A="x y"\n', {"A": "x y"}),
    ("A='x \"y\" $Z'\n", {"A": 'x "y" $Z'}),  # nothing is special in single quotes
    ('A="a\\"b\\\\c\\$d\\`e\\nf"\n', {"A": 'a"b\\c$d`e\\nf'}),  # only "\\`$ are escapes in double quotes
    ('A="x" "y" z\n', {"A": "xyz"}),  # quoted parts and words join
    ("A=a \\\n  b\n", {"A": "a   b"}),  # a continuation: the newline is eaten, the next line's spaces kept
    ('A="a\\\nb"\n', {"A": "ab"}),
    ("A=x\\ \n", {"A": "x "}),  # an escaped space survives the trailing-space chomp
    ("A=a\\tb\n", {"A": "atb"}),  # outside quotes a backslash just takes the next character
    ("# c\n; c\nA=1\n", {"A": "1"}),
    ("A=1 # not a comment\n", {"A": "1 # not a comment"}),
    ("A=1\nA=2\n", {"A": "2"}),  # the last wins
    ("A=1\nA=\x01\n", {"A": "\x01"}),  # ... even one with a control character (252 keeps it)
    ("1A=x\nA-B=y\nA B=z\nC=ok\n", {"C": "ok"}),  # invalid names are dropped
    ("NOEQUALS\nA\n=x\n", {}),
    ("A=\n", {"A": ""}),
    ("A=1", {"A": "1"}),  # no newline at the end
    ('A="unterminated\n', {"A": "unterminated\n"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
]


UNIT_TEXT = b"""[Unit]
Description=Kubernetes Scheduler

[Service]
EnvironmentFile=-/etc/kubernetes/scheduler
ExecStart=/usr/local/bin/kube-scheduler \\
            $KUBE_SCHEDULER_ARGS
Restart=on-failure
"""
