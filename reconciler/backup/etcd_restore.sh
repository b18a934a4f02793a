#!/bin/bash
# One etcd member's data directory rebuilt from a snapshot (reconciler.engine.restore builds the arguments and sends
# the snapshot on stdin). Linted by shellcheck. Run as `bash -c SCRIPT reconciler-etcd-restore MODE ...`:
#
#   check DATA_DIR BINARY_DIR    before anything is stopped: "@@OK etcdutl|etcdctl", or "@@ERR why" (the data
#                                directory a link or a mount point, its parent missing or not a directory)
#   rebuild SHA256 NAME DATA_DIR INITIAL_CLUSTER PEER_URLS TOKEN BINARY_DIR
#                                while the member is stopped. Idempotent: a member already rebuilt from this
#                                snapshot with this token (DATA_DIR.reconciler-restored says so) is left alone
#                                ("@@ALREADY"). Otherwise the snapshot is received beside the data directory (same
#                                filesystem), its sha256 checked, restored with etcdutl (etcd >= 3.5:
#                                --bump-revision 1000000000 --mark-compacted, so every watcher re-lists) beside the
#                                member's binary or on PATH, else etcdctl (3.4: no bump, "@@NOBUMP"), into a new
#                                directory owned as the old one was (mode 0700); the old one is kept beside it
#                                (DATA_DIR.before-restore-<time>.<random>), the new one renamed into place, the
#                                marker written last ("@@RESTORED").
#   done DATA_DIR                the restore is over: the marker goes (the same snapshot may be restored again)
set -euo pipefail
export LC_ALL=C ETCDCTL_API=3
mode=$1
shift
tool() {  # etcdutl beside the binary or on PATH, else etcdctl
  if [ -x "$1/etcdutl" ]; then echo "$1/etcdutl"; elif command -v etcdutl >/dev/null; then command -v etcdutl; fi
}
case "$mode" in
check)
  datadir=$1 bindir=$2
  parent=$(dirname -- "$datadir")
  if [ -L "$datadir" ]; then echo "@@ERR $datadir is a symbolic link: restore where it leads (DATA_DIR in the specs)"
  elif [ -e "$datadir" ] && [ ! -d "$datadir" ]; then echo "@@ERR $datadir is not a directory"
  elif [ -d "$datadir" ] && mountpoint -q -- "$datadir"; then
    echo "@@ERR $datadir is a mount point: it cannot be renamed aside (give etcd a directory inside it)"
  elif [ ! -d "$parent" ] || [ -L "$parent" ]; then echo "@@ERR $parent is not a directory"
  elif [ -n "$(tool "$bindir")" ]; then echo "@@OK etcdutl"
  else echo "@@OK etcdctl"
  fi
  ;;
rebuild)
  sha=$1 name=$2 datadir=$3 cluster=$4 peers=$5 token=$6 bindir=$7
  marker="$datadir.reconciler-restored"
  if [ -f "$marker" ] && [ ! -L "$marker" ] && [ "$(head -c 200 -- "$marker")" = "$sha $token" ] \
      && [ -d "$datadir/member" ]; then
    cat >/dev/null
    echo "@@ALREADY"
    exit 0
  fi
  parent=$(dirname -- "$datadir")
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
  utl=$(tool "$bindir")
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
    aside=$(mktemp -u "$datadir.before-restore-$(date -u +%Y%m%dT%H%M%SZ).XXXXXX")
    mv -T -- "$datadir" "$aside"
  fi
  mv -T -- "$work/data" "$datadir"
  tmp=$(mktemp "$parent/.reconciler-restored.XXXXXX")
  printf '%s %s\n' "$sha" "$token" >"$tmp"
  mv -T -- "$tmp" "$marker"
  sync
  echo "@@RESTORED"
  ;;
done)
  rm -f -- "$1.reconciler-restored"
  echo "@@DONE"
  ;;
*)
  echo "@@ERR unknown mode" >&2
  exit 2
  ;;
esac
