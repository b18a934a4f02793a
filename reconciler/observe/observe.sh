#!/bin/bash
# reconciler's observation of a host: one round trip for every managed file, unit, certificate, address and
# health check. Run as `bash -c SCRIPT reconciler-observe ARGS...`; reconciler.observe.facts builds the
# arguments and parses the answer (the @@ tags below), transport/fake.py answers the same for in-memory hosts
# (tests/unit/observe/test_observe_sh.py holds them to it). @CURL_SAFE@ and @PROPS@ are filled in when the
# package loads it: curl's safe options, the unit properties asked for. Linted by shellcheck (the slow tier).
#
# Inputs arrive as "$@" in groups: F <path> <max bytes> <stamp> | U <unit> | C <path> <stamp> (a certificate: its
# PEM block, parsed here, not on the host) | H <name> <timeout> <url> <ca> <cert> <key> | T <name> <timeout> <host> <port>
# A stamp is what a file's `stat` said when it was last read (device:inode:size:mtime:ctime; "-" for none): a file
# whose stamp is unchanged is answered @@SAME and not read again, a certificate `same` and not parsed again.
# A managed path is never followed if it is a symlink: its target is reported (base64), not read; any other
# non-regular file (directory, fifo, socket, device) is reported by its type. A regular file is read with
# O_NOFOLLOW (dd iflag=nofollow), and only when it is not larger than the limit given for it.
# Of a certificate only its first CERTIFICATE block is sent, and only its base64 lines: nothing else of a file
# that is not one (a secret behind a link, a key) leaves the host, nor a line the parser could take for its own.
# Probes run concurrently (each job prints one line, < PIPE_BUF, so lines never interleave) while the files,
# certificates and units are read; their lines follow the units'.
export LC_ALL=C
printf '@@NOW %s\n' "$EPOCHREALTIME"
files=(); limits=(); known=(); units=(); certs=(); probes=(); addrs=(); settle=0; declare -A expect
while [ $# -gt 0 ]; do
  case "$1" in
  F) files+=("$2"); limits+=("$3"); known+=("$4"); shift 4 ;;
  U) units+=("$2"); shift 2 ;;
  C) certs+=("$2" "$3"); shift 3 ;;
  A) addrs+=("$2" "$3"); shift 3 ;;
  H) probes+=("${@:1:7}"); shift 7 ;;
  T) probes+=("${@:1:5}"); shift 5 ;;
  S) settle=$2; shift 2 ;;
  E) expect[$2]=$3; shift 3 ;;
  *) echo "@@ERR bad argument $1"; exit 2 ;;
  esac
done
http() {  # name timeout url ca cert key
  local opts=(@CURL_SAFE@ -o /dev/null -w '%{http_code}' --max-time "$2") code rc
  [ "$4" != - ] && opts+=(--cacert "$4")
  [ "$5" != - ] && opts+=(--cert "$5" --key "$6")
  code=$(timeout -k 1 "$2" curl "${opts[@]}" -- "$3"); rc=$?  # curl opens a fifo CA file before --max-time counts
  printf '@@H %s %s %s\n' "$1" "$rc" "${code:0:20}"
}
curl_parallel() {  # curl >= 7.75: transfers side by side in one process (-Z) with each one's exit code
  local v; read -r _ v _ < <(curl --version 2>/dev/null) || return 1
  local IFS=.
  # shellcheck disable=SC2086  # split on the dots, on purpose
  set -- $v
  [ "${1:-0}" -gt 7 ] 2>/dev/null || { [ "${1:-0}" = 7 ] && [ "${2:-0}" -ge 75 ] 2>/dev/null; }
}
http_all() {  # the H probes' 6 words each: one curl process (one TLS library start), its transfers in parallel
  # (a -w format must not begin with @, curl's "read it from a file": %{stdout} first, which prints nothing)
  local args=() most=1 k t
  for ((k = 0; k < ${#hprobes[@]}; k += 6)); do
    [ $k -gt 0 ] && args+=(--next)
    args+=(@CURL_SAFE@ -o /dev/null -w "%{stdout}@@H ${hprobes[k]} %{exitcode} %{http_code}\n" --max-time "${hprobes[k + 1]}")
    [ "${hprobes[k + 3]}" != - ] && args+=(--cacert "${hprobes[k + 3]}")
    [ "${hprobes[k + 4]}" != - ] && args+=(--cert "${hprobes[k + 4]}" --key "${hprobes[k + 5]}")
    args+=(--url "${hprobes[k + 2]}")
    t=${hprobes[k + 1]%.*}; [ $((${t:-0} + 1)) -gt "$most" ] && most=$((${t:-0} + 1))  # whole seconds, rounded up
  done
  timeout -k 1 "$most" curl -Z --parallel-immediate "${args[@]}" 2>/dev/null  # a connection each, at once
}
tcp() {  # name timeout host port
  # shellcheck disable=SC2016  # expanded by the inner bash, from its own arguments
  timeout "$2" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$3" "$4" 2>/dev/null
  printf '@@H %s %s -\n' "$1" "$?"
}
probe_round() {  # every probe once, side by side
  hprobes=()
  for ((k = 0; k < ${#probes[@]}; )); do
    if [ "${probes[k]}" = H ]; then hprobes+=("${probes[@]:k+1:6}"); k=$((k + 7)); else tcp "${probes[@]:k+1:4}" & k=$((k + 5)); fi
  done
  if [ ${#hprobes[@]} -gt 6 ] && curl_parallel; then http_all &
  else for ((k = 0; k < ${#hprobes[@]}; k += 6)); do http "${hprobes[@]:k:6}" & done; fi
  wait
}
passing() {  # a probe's line answered as its check wants: connected (TCP), the E status (HTTP)
  local tag name rc code
  read -r tag name rc code <<< "$1"
  [ "$tag" = @@H ] && [ "$rc" = 0 ] && { [ "$code" = - ] || [ "$code" = "${expect[$name]-}" ]; }
}
if [ ${#probes[@]} -gt 0 ]; then
  # S microseconds: the failing probes again every 50 ms until they pass or S is over (a restarted unit is seen
  # as soon as it answers); each check's last answer is printed. Bounded by the clock and by a count of rounds (a
  # clock stepped back); a bash older than 5 has no $EPOCHREALTIME: it does not settle.
  [ -n "${EPOCHREALTIME:-}" ] || settle=0
  end=$((${EPOCHREALTIME/./} + settle)) rounds=$((settle / 50000))
  exec 3< <(
    all=("${probes[@]}"); declare -A said
    while :; do
      while IFS= read -r line; do [ "${line:0:4}" = '@@H ' ] && name=${line:4} && said[${name%% *}]=$line; done < <(probe_round)
      # shellcheck disable=SC2015  # both tests true, or stop
      [ $((rounds--)) -gt 0 ] && [ $((${EPOCHREALTIME/./} + 50000)) -lt "$end" ] || break
      probes=()
      for ((k = 0; k < ${#all[@]}; k += w)); do
        w=5; [ "${all[k]}" = H ] && w=7
        passing "${said[${all[k + 1]}]-}" || probes+=("${all[@]:k:w}")
      done
      [ ${#probes[@]} -gt 0 ] || break
      sleep 0.05
    done
    for line in "${said[@]}"; do printf '%s\n' "$line"; done
  )
fi
# A stamp is offered for trust only where no one but root can change the file unseen: the file root's and not
# group/other-writable (an mmap write by its owner leaves ctime alone), under directories likewise (whoever may
# rename a directory on the path could swap it between the stat and the read); elsewhere the stamp is "-".
declare -A seen safe
paths=("${files[@]}"); for ((k = 0; k < ${#certs[@]}; k += 2)); do paths+=("${certs[k]}"); done
for p in "${paths[@]}"; do d=${p%/*}; while [ "$d" != "${d%/*}" ]; do seen[$d]=1; d=${d%/*}; done; done
if [ ${#files[@]} -gt 0 ] || [ ${#certs[@]} -gt 0 ]; then
  while IFS='|' read -r name uid mode; do
    [ "$uid" = 0 ] && ! (( 8#$mode & 8#022 )) && safe[$name]=1
  done < <(stat -L -c '%n|%u|%a' -- / "${!seen[@]}" 2>/dev/null)
fi
pinnable() {  # path uid mode
  [ "$2" = 0 ] && ! (( 8#$3 & 8#022 )) && [ -n "${safe[/]-}" ] || return 1
  local d=${1%/*}
  while [ "$d" != "${d%/*}" ]; do [ -n "${safe[$d]-}" ] || return 1; d=${d%/*}; done
}
if [ ${#files[@]} -gt 0 ]; then
  declare -A canon meta  # each file's directory -> its real path; each file -> what one stat of them all said
  dirs=("${files[@]%/*}")
  for ((i = 0; i < ${#dirs[@]}; i++)); do [ -n "${dirs[i]}" ] || dirs[i]=/; done  # a file in / has the directory ""
  mapfile -t real < <(realpath -m -- "${dirs[@]}")
  for ((i = 0; i < ${#dirs[@]}; i++)); do canon[${files[i]}]=${real[i]}; done
  while IFS='|' read -r name kind rest; do meta[$name]="$kind|$rest"; done \
    < <(stat -c '%n|%F|%u|%a %U %G %.9Y %s %d:%i:%s:%.9Y:%.9Z' -- "${files[@]}" 2>/dev/null)
  for ((i = 0; i < ${#files[@]}; i++)); do
    f=${files[i]}; m=${meta[$f]-}; kind=${m%%|*}; m=${m#*|}; uid=${m%%|*}; m=${m#*|}
    pinnable "$f" "$uid" "${m%% *}" || m="${m% *} -"
    printf '@@F %s\n' "$f"
    if [ "${canon[$f]}" != "${dirs[i]}" ]; then echo '@@OTHER path through a symlinked directory'
    elif [ -z "$kind" ]; then
      if [ -L "$f" ] || [ -e "$f" ]; then echo '@@ERR unreadable'; else echo '@@MISSING'; fi
    elif [ "$kind" = 'symbolic link' ]; then printf '@@LINK %s\n' "$(readlink -n -- "$f" | base64 -w0)"
    elif [ "$kind" = directory ]; then read -r dmode downer dgroup _ <<< "$m"; printf '@@DIR %s %s %s\n' "$dmode" "$downer" "$dgroup"
    elif [ "$kind" != 'regular file' ] && [ "$kind" != 'regular empty file' ]; then printf '@@OTHER %s\n' "$kind"
    elif [ "${m##* }" != - ] && [ "${m##* }" = "${known[i]}" ]; then echo '@@SAME'
    else
      read -r _ _ _ _ size _ <<< "$m"
      if [ "$size" -gt "${limits[i]}" ]; then printf '%s\n@@BIG\n' "$m"
      else
        printf '%s\n' "$m"
        dd if="$f" iflag=nofollow,count_bytes count=$((limits[i] + 1)) bs=1M status=none | base64
        [ "${PIPESTATUS[0]}" = 0 ] || echo '@@ERR unreadable'
      fi
    fi
  done
fi
for ((k = 0; k < ${#certs[@]}; k += 2)); do
  c=${certs[k]}
  printf '@@C %s\n' "$c"
  read -r full uid mode < <(stat -L -c '%d:%i:%s:%.9Y:%.9Z %u %a' -- "$c" 2>/dev/null)
  st=$full; [ ! -L "$c" ] && pinnable "$c" "$uid" "$mode" || st=-  # a link could be swapped: never pinned
  if [ -z "$full" ]; then
    if [ -L "$c" ] || [ -e "$c" ]; then echo 'error unreadable'; else echo missing; fi
  elif [ ! -f "$c" ]; then echo 'error not a regular file'
  elif IFS=: read -r _ _ size _ <<< "$full" && [ "$size" -gt 65536 ]; then echo 'error larger than 64 KiB, not a certificate'
  elif [ "$st" != - ] && [ "$st" = "${certs[k + 1]}" ]; then printf 'same %s\n' "$st"
  else
    printf 'stamp %s\n' "$st"  # at most 64 KiB is read (a file swapped in after the stat is cut there)
    timeout 10 dd if="$c" iflag=nonblock,count_bytes count=65536 bs=64K status=none 2>/dev/null | sed -n '/^-----BEGIN CERTIFICATE-----/,/^-----END CERTIFICATE-----/{/^-----\(BEGIN\|END\) CERTIFICATE-----\r\?$/p;/^[A-Za-z0-9+\/=]*\r\?$/p;/^-----END/q}'
  fi
done
for ((k = 0; k < ${#addrs[@]}; k += 2)); do  # whether this host holds each virtual IP
  held=0; [ -n "$(ip -o addr show to "${addrs[k + 1]}" 2>/dev/null)" ] && held=1
  printf '@@A %s %s\n' "${addrs[k]}" "$held"
done
if [ ${#units[@]} -gt 0 ]; then
  echo '@@U'
  systemctl show --timestamp=us+utc -p @PROPS@ -- "${units[@]}"
  echo '@@UEND'
fi
if [ ${#probes[@]} -gt 0 ]; then
  while IFS= read -r line <&3; do printf '%s\n' "$line"; done
fi
echo '@@END'
