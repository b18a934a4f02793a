#!/bin/bash
# One etcd member's data directory rebuilt from a snapshot (reconciler.engine.restore builds the arguments and sends
# the snapshot on stdin). Run as `bash -c SCRIPT reconciler-etcd-restore SHA256 NAME DATA_DIR INITIAL_CLUSTER
# PEER_URLS TOKEN BINARY_DIR` while the member is stopped. Linted by shellcheck.
#
# Idempotent: a member already restored from this snapshot with this token (DATA_DIR.reconciler-restored says so)
# is left alone ("@@ALREADY"). Otherwise the snapshot is received beside the data directory (same filesystem),
# its sha256 checked, restored with etcdutl (etcd >= 3.5: --bump-revision 1000000000 --mark-compacted, so that
# every watcher re-lists) found beside the member's binary or on PATH, else with etcdctl (3.4: no revision bump,
# "@@NOBUMP"), into a new directory owned as the old one was (mode 0700); the old directory is kept beside it
# (DATA_DIR.before-restore-<time>), the new one renamed into place, the marker written last ("@@RESTORED").
set -euo pipefail
export LC_ALL=C ETCDCTL_API=3
sha=$1 name=$2 datadir=$3 cluster=$4 peers=$5 token=$6 bindir=$7
marker="$datadir.reconciler-restored"
if [ -f "$marker" ] && [ "$(cat -- "$marker")" = "$sha $token" ] && [ -d "$datadir/member" ]; then
  cat >/dev/null
  echo "@@ALREADY"
  exit 0
fi
parent=$(dirname -- "$datadir")
mkdir -p -- "$parent"
work=$(mktemp -d "$parent/.reconciler-restore.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
cat >"$work/snapshot.db"
got=$(sha256sum <"$work/snapshot.db")
if [ "${got%% *}" != "$sha" ]; then
  echo "@@ERR the snapshot arrived changed (sha256 ${got%% *})" >&2
  exit 4
fi
args=(--name "$name" --data-dir "$work/data" --initial-cluster "$cluster" --initial-advertise-peer-urls "$peers"
      --initial-cluster-token "$token")
utl=""
if [ -x "$bindir/etcdutl" ]; then utl="$bindir/etcdutl"; elif command -v etcdutl >/dev/null; then utl=etcdutl; fi
if [ -n "$utl" ]; then
  "$utl" snapshot restore "$work/snapshot.db" "${args[@]}" --bump-revision 1000000000 --mark-compacted \
    >"$work/said" 2>&1 || { echo "@@ERR etcdutl snapshot restore: $(tail -c 600 "$work/said" | tr '\n' ' ')" >&2; exit 5; }
else
  ctl=etcdctl
  [ -x "$bindir/etcdctl" ] && ctl="$bindir/etcdctl"
  "$ctl" snapshot restore "$work/snapshot.db" "${args[@]}" \
    >"$work/said" 2>&1 || { echo "@@ERR etcdctl snapshot restore: $(tail -c 600 "$work/said" | tr '\n' ' ')" >&2; exit 5; }
  echo "@@NOBUMP"
fi
owner=$(stat -c %u:%g -- "$datadir" 2>/dev/null || stat -c %u:%g -- "$parent")
chown -R -- "$owner" "$work/data"
chmod 700 "$work/data"
if [ -e "$datadir" ]; then
  mv -- "$datadir" "$datadir.before-restore-$(date -u +%Y%m%dT%H%M%SZ)"
fi
mv -- "$work/data" "$datadir"
printf '%s %s\n' "$sha" "$token" >"$marker.tmp"
mv -- "$marker.tmp" "$marker"
sync
echo "@@RESTORED"
