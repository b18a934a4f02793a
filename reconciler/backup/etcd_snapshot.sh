#!/bin/bash
# An etcd snapshot taken on a member's host and sent on stdout (reconciler.backup.take builds the arguments and
# checks what arrives; transport/fake.py answers the same for in-memory hosts). Linted by shellcheck.
# Run as `bash -c SCRIPT reconciler-etcd-snapshot ENDPOINT CACERT CERT KEY DBSIZE` ("-" for a TLS file not given;
# DBSIZE: the member's database in bytes as it said, 0 if it did not).
#
# Refused ("@@ERR", nothing written) when /var/tmp has less room than the database and 64 MiB besides: a snapshot
# must not fill the disk etcd and the master live on.
# `etcdctl snapshot save` from the one member at ENDPOINT into a directory of its own under /var/tmp (mode 0700,
# removed whatever happens), then on stderr "@@STATUS " and `etcdctl snapshot status -w json` (hash, revision,
# total keys, size), then the file on stdout. The client key stays on this host; only the snapshot leaves it.
set -euo pipefail
export LC_ALL=C ETCDCTL_API=3
endpoint=$1 cacert=$2 cert=$3 key=$4 dbsize=$5
if ! command -v etcdctl >/dev/null; then
  echo "@@ERR etcdctl is not installed on this host (Debian: etcd-client)" >&2
  exit 3
fi
tls=()
[ "$cacert" = - ] || tls+=("--cacert=$cacert")
[ "$cert" = - ] || tls+=("--cert=$cert")
[ "$key" = - ] || tls+=("--key=$key")
case $dbsize in '' | *[!0-9]*) dbsize=0 ;; esac
free=$(df -B1 --output=avail /var/tmp 2>/dev/null | tail -n 1 | tr -d ' ') || free=
case $free in '' | *[!0-9]*) free= ;; esac  # df cannot say: not checked
if [ -n "$free" ] && [ "$free" -lt $((dbsize + 64 * 1024 * 1024)) ]; then
  echo "@@ERR /var/tmp has $free bytes free; a snapshot of this member's $dbsize byte database needs that and 64 MiB more" >&2
  exit 4
fi
umask 077
# what a snapshot killed outright (SIGKILL: no trap runs) left more than a day ago
find /var/tmp -maxdepth 1 -name 'reconciler-etcd-snapshot.*' -type d -mtime +0 -exec rm -rf -- {} + 2>/dev/null || true
dir=$(mktemp -d /var/tmp/reconciler-etcd-snapshot.XXXXXX)
trap 'rm -rf -- "$dir"' EXIT
trap 'exit 129' HUP PIPE TERM INT  # the connection gone: the EXIT trap still removes it
# at most 25 minutes (a save that hangs must not leave a growing file here: the caller gives up after 30)
if ! timeout -k 10 1500 etcdctl --endpoints="$endpoint" ${tls[@]+"${tls[@]}"} snapshot save "$dir/snapshot.db" \
    >"$dir/said" 2>&1; then
  echo "@@ERR etcdctl snapshot save failed: $(tail -c 600 "$dir/said" | tr '\n' ' ')" >&2
  exit 4
fi
# etcd >= 3.6 reads a snapshot's status with etcdutl only; 3.4 has etcdctl only
if command -v etcdutl >/dev/null; then status=(etcdutl -w json snapshot status); else status=(etcdctl -w json snapshot status); fi
if ! said=$(timeout 300 "${status[@]}" "$dir/snapshot.db" 2>/dev/null | head -c 4096 | tr -d '\n') || [ -z "$said" ]; then
  echo "@@ERR ${status[0]} snapshot status failed on the saved snapshot" >&2
  exit 4
fi
echo "@@STATUS $said" >&2
cat -- "$dir/snapshot.db"
