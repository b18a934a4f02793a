#!/bin/bash
# What a component's binary on the host says of its flags, asked before reconciler starts or restarts it with new
# ones (reconciler.observe.programs builds the arguments and parses the @@ tags; transport/fake.py answers the
# same for in-memory hosts). Run as `bash -c SCRIPT reconciler-programs MODE ARGS...`. Linted by shellcheck.
#
#   sum PATH STAMP...             per path: "@@P <stamp> <sha256> <path>"; "@@P <stamp> same <path>" when its
#                                 stamp (device:inode:size:mtime:ctime) is still STAMP (it is not read again);
#                                 "@@P - - <path>" when it is not an executable regular file (a symlink is
#                                 followed: systemd runs what it leads to)
#   ask PATH SUM [+help] NAME...  "@@CHANGED" when PATH's checksum is no longer SUM; else with +help its
#                                 `--version` (@@VERSION) and `--help` (@@HELP), then for each NAME its answer to
#                                 `PATH --NAME= --help` (@@PROBE NAME): refused as unknown, or not. "@@END" last.
#
# The binary runs with an empty environment, no stdin and at most 10 s (then killed); of its output at most 1 MiB
# of --help, 4 KiB of each probe and 300 bytes of --version are read. A probe's flag comes before --help, with an
# empty value: a flag the binary does not know is refused before --help is seen, one it knows never takes
# "--help" for its value, so the binary prints its help and exits; it never starts serving.
export LC_ALL=C
ask() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin timeout -k 2 10 "$@" </dev/null 2>&1
}
mode=$1
shift
case "$mode" in
sum)
  while [ $# -ge 2 ]; do
    p=$1 known=$2
    shift 2
    if [ -f "$p" ] && [ -x "$p" ] && st=$(stat -L -c '%d:%i:%s:%.9Y:%.9Z' -- "$p" 2>/dev/null); then
      if [ "$st" = "$known" ]; then
        printf '@@P %s same %s\n' "$st" "$p"
      elif s=$(sha256sum <"$p" 2>/dev/null); then
        printf '@@P %s %s %s\n' "$st" "${s%% *}" "$p"
      else
        printf '@@P - - %s\n' "$p"
      fi
    else
      printf '@@P - - %s\n' "$p"
    fi
  done
  ;;
ask)
  p=$1 sum=$2
  shift 2
  s=$(sha256sum <"$p" 2>/dev/null) || s=-
  if [ "${s%% *}" != "$sum" ]; then
    echo "@@CHANGED"
    exit 0
  fi
  if [ "${1:-}" = "+help" ]; then
    shift
    echo "@@VERSION"
    ask "$p" --version | head -c 300
    printf '\n@@HELP\n'
    ask "$p" --help | head -c 1048576
    echo
  fi
  for n in "$@"; do
    printf '@@PROBE %s\n' "$n"
    ask "$p" "--$n=" --help | head -c 4096
    echo
  done
  echo "@@END"
  ;;
*)
  echo "@@ERR unknown mode" >&2
  exit 2
  ;;
esac
