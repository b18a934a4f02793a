#!/bin/bash
# The new machine's side of an etcd member replacement (reconciler.engine.replace builds the arguments; values
# arrive as arguments or on stdin, never inside this text). Linted by shellcheck. Run as
# `bash -c SCRIPT reconciler-etcd-join MODE ...`:
#
#   prepare UNIT DATA_DIR
#                        UNIT stopped; what a machine that never was a member of this cluster holds in DATA_DIR (a
#                        failed first start made a data directory of a cluster of its own) is moved aside to
#                        DATA_DIR.before-replace-<time>.<random>: "@@ASIDE path" or "@@EMPTY"; "@@ERR why" for a
#                        link, a mount point, a parent that is not a directory, or a UNIT running again (started by
#                        someone else meanwhile: nothing is moved from under it)
#   join UNIT            stdin: the environment the member's first start needs (ETCD_INITIAL_CLUSTER_STATE=existing
#                        and the cluster as it is now), written to /run/reconciler-etcd-join/UNIT.env (0600) with a
#                        runtime drop-in that reads it after the unit's own EnvironmentFile (the later one wins);
#                        systemd reloaded: "@@JOINING". Under /run: gone at the next boot, by then not needed
#   joined UNIT          the member is promoted: both removed, systemd reloaded (the running member keeps its
#                        environment; a data directory makes etcd ignore the initial-* settings): "@@JOINED"
set -euo pipefail
export LC_ALL=C
mode=$1
shift
envdir=/run/reconciler-etcd-join
case "$mode" in
prepare)
  unit=$1 datadir=$2
  parent=$(dirname -- "$datadir")
  systemctl stop -- "$unit"
  if systemctl is-active --quiet -- "$unit"; then echo "@@ERR $unit is running again: its data dir is left as it is"
  elif [ -L "$datadir" ]; then echo "@@ERR $datadir is a symbolic link: replace where it leads (DATA_DIR in the specs)"
  elif [ -e "$datadir" ] && [ ! -d "$datadir" ]; then echo "@@ERR $datadir is not a directory"
  elif [ -d "$datadir" ] && mountpoint -q -- "$datadir"; then
    echo "@@ERR $datadir is a mount point: it cannot be moved aside (give etcd a directory inside it)"
  elif [ ! -d "$parent" ] || [ -L "$parent" ]; then echo "@@ERR $parent is not a directory"
  elif [ -d "$datadir" ] && [ -n "$(ls -A -- "$datadir")" ]; then
    aside=$(mktemp -u "$datadir.before-replace-$(date -u +%Y%m%dT%H%M%SZ).XXXXXX")
    mv -T -- "$datadir" "$aside"
    echo "@@ASIDE $aside"
  else
    echo "@@EMPTY"
  fi
  ;;
join)
  unit=$1
  mkdir -p -- "$envdir" "/run/systemd/system/$unit.d"
  chmod 0700 "$envdir"
  tmp=$(mktemp "$envdir/.$unit.XXXXXX")
  head -c 65537 >"$tmp"
  if [ "$(stat -c %s -- "$tmp")" -gt 65536 ]; then
    rm -f -- "$tmp"
    echo "@@ERR the join environment is over 64 KiB" >&2
    exit 4
  fi
  mv -T -- "$tmp" "$envdir/$unit.env"
  tmp=$(mktemp "/run/systemd/system/$unit.d/.join.XXXXXX")
  printf '[Service]\nEnvironmentFile=%s\n' "$envdir/$unit.env" >"$tmp"
  chmod 0644 "$tmp"
  mv -T -- "$tmp" "/run/systemd/system/$unit.d/50-reconciler-join.conf"
  systemctl daemon-reload
  echo "@@JOINING"
  ;;
joined)
  unit=$1
  rm -f -- "/run/systemd/system/$unit.d/50-reconciler-join.conf" "$envdir/$unit.env"
  rmdir --ignore-fail-on-non-empty -- "/run/systemd/system/$unit.d" "$envdir" 2>/dev/null || true
  systemctl daemon-reload
  echo "@@JOINED"
  ;;
*)
  echo "@@ERR unknown mode" >&2
  exit 2
  ;;
esac
