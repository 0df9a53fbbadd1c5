#!/usr/bin/env bash
# collect-node.sh: capture traffic and dump NAT state on one Kubernetes node, in the
# natlens incident-bundle layout (DESIGN.md section 2):
#
#   <out>/nodes/<node>/any.pcap          tcpdump -i any (SLL2: shows DNAT/SNAT copies)
#   <out>/nodes/<node>/<nic>.pcap        tcpdump -i <primary NIC> (what left/entered the node)
#   <out>/nodes/<node>/iptables-save.txt iptables-save (all tables; IPv4 rules only)
#   <out>/nodes/<node>/ip6tables-save.txt ip6tables-save (the IPv6 rules)
#   <out>/nodes/<node>/iptables-nft-save.txt, ip6tables-nft-save.txt  only when legacy
#                                        tables exist too: see "NAT state" below
#   <out>/nodes/<node>/ipset-save.txt    ipset save
#   <out>/nodes/<node>/ipvsadm.txt       ipvsadm -S -n
#   <out>/nodes/<node>/nft-ruleset.txt   nft list ruleset (kube-proxy nftables mode writes no
#                                        iptables rules; iptables-nft's tables show here too)
#   <out>/nodes/<node>/nft-ruleset.json  nft -j list ruleset (the same, libnftables JSON)
#   <out>/nodes/<node>/conntrack.txt     conntrack -L, then conntrack -L -f ipv6 appended
#   <out>/nodes/<node>/ip-addr.json      ip -j addr
#   <out>/nodes/<node>/ip-route.json     ip -j route
#   <out>/nodes/<node>/collect-node.log  what ran, what was skipped and why, UTC times
#
# Captures stop after --duration seconds or when a file reaches --max-mb, whichever
# comes first. A missing tool is skipped with a note in the log, never a failure.
# Run as root on the node (or in a debug pod with hostNetwork and NET_ADMIN/NET_RAW):
#
#   sudo ./collect-node.sh -d 120 -s 200 -o /tmp/incident
#
# then copy <out>/nodes/<node> of every node into one bundle directory next to
# cluster/ (see README, "Reproduction lab" -> "Collecting from real nodes").
set -u

usage() {
  cat <<'EOF'
usage: collect-node.sh [-d SECONDS] [-s MAX_MB] [-i NIC] [-n NODE] [-o OUTDIR] [-f FILTER] [-A]
  -d SECONDS  capture duration (default 60)
  -s MAX_MB   stop capturing when a capture file reaches this size, MB (default 100; decimals ok)
  -i NIC      primary NIC (default: the interface of the default route)
  -n NODE     node name, the directory name under nodes/ (default: hostname)
  -o OUTDIR   bundle directory (default ./natlens-<node>-<UTC time>)
  -f FILTER   tcpdump filter expression (default: none, capture everything)
  -A          skip the `-i any` capture (NIC only)
EOF
}

duration=60; max_mb=100; nic=""; node=""; out=""; filter=""; want_any=1
while getopts "d:s:i:n:o:f:Ah" opt; do
  case $opt in
    d) duration=$OPTARG ;; s) max_mb=$OPTARG ;; i) nic=$OPTARG ;; n) node=$OPTARG ;;
    o) out=$OPTARG ;; f) filter=$OPTARG ;; A) want_any=0 ;;
    h) usage; exit 0 ;; *) usage >&2; exit 2 ;;
  esac
done
case $duration in ''|*[!0-9.]*) echo "collect-node.sh: -d must be a number of seconds" >&2; exit 2 ;; esac
case $max_mb in ''|*[!0-9.]*) echo "collect-node.sh: -s must be a size in MB" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
  echo "collect-node.sh: must run as root (tcpdump, iptables-save, conntrack need it)" >&2
  exit 2
fi

node=${node:-$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)}
out=${out:-./natlens-$node-$(date -u +%Y%m%dT%H%M%SZ)}
dir="$out/nodes/$node"
mkdir -p "$dir" || { echo "collect-node.sh: cannot create $dir" >&2; exit 2; }
log="$dir/collect-node.log"
: >"$log"
note() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" | tee -a "$log" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# dump [-a] FILE PACKAGE CMD...: run CMD into FILE (-a: append to it); a missing tool or
# a failure is a note. What CMD said on stderr is kept in $last_err (and noted).
last_err=""
dump() {
  local append=0
  [ "$1" = -a ] && { append=1; shift; }
  local file=$1 pkg=$2; shift 2
  last_err=""
  if ! have "$1"; then
    note "skipped $*: $1 not installed (Debian package $pkg)"
    return 0
  fi
  if "$@" >"$dir/.out" 2>"$dir/.err"; then
    last_err=$(head -c 300 "$dir/.err" | tr '\n' ' ')
    if [ "$append" = 1 ]; then
      cat "$dir/.out" >>"$dir/$file"
      note "ok $* >> $file ($(wc -l <"$dir/.out") lines)"
    else
      mv "$dir/.out" "$dir/$file"
      note "ok $* -> $file ($(wc -l <"$dir/$file") lines)"
    fi
    [ -z "$last_err" ] || note "$1 said: $last_err"
  else
    note "failed $* (exit $?): $(head -c 300 "$dir/.err" | tr '\n' ' ')"
    [ "$append" = 1 ] || { [ -s "$dir/.out" ] && mv "$dir/.out" "$dir/$file"; }
  fi
  rm -f "$dir/.err" "$dir/.out"
}

# save_rules ip|ip6: <ip>tables-save into <ip>tables-save.txt. When the nf_tables backend
# warns that legacy tables exist too (on stdout in older iptables, on stderr since 1.8.5),
# kube-proxy wrote its rules with the legacy backend: those are the ones that matter and go
# to <ip>tables-save.txt, the nf_tables dump is kept as <ip>tables-nft-save.txt.
save_rules() {
  local t=${1}tables
  if ! have "$t-save"; then
    note "skipped $t-save: not installed (Debian package iptables)"
    return 0
  fi
  dump "$t-save.txt" iptables "$t-save"
  if grep -q "$t-legacy tables present" "$dir/$t-save.txt" 2>/dev/null \
      || case $last_err in *"$t-legacy tables present"*) true ;; *) false ;; esac; then
    if have "$t-legacy-save"; then
      mv "$dir/$t-save.txt" "$dir/$t-nft-save.txt"
      note "$t-legacy tables present: $t-save.txt is $t-legacy-save (kube-proxy's rules);" \
        "the nf_tables rules are kept in $t-nft-save.txt for reference only - natlens does" \
        "not read it (natlens analyze lists it as not read)"
      dump "$t-save.txt" iptables "$t-legacy-save"
    else
      note "$t-legacy tables present but $t-legacy-save not installed: $t-save.txt holds only" \
        "the nf_tables rules and misses the legacy ones"
    fi
  fi
}

note "collect-node.sh on $node: duration ${duration}s, max ${max_mb} MB per capture, out $dir"
note "kernel $(uname -r)"

if [ -z "$nic" ] && have ip; then
  nic=$(ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
fi

# -- captures -----------------------------------------------------------------
pids=(); files=()
if have tcpdump; then
  points=()
  [ "$want_any" = 1 ] && points+=(any)
  if [ -n "$nic" ]; then points+=("$nic"); else note "no primary NIC found (no default route): only -i any"; fi
  for point in "${points[@]}"; do
    # -B: `-i any` cannot size its ring by the MTU; a bigger buffer avoids drops in bursts.
    # shellcheck disable=SC2086
    tcpdump -n -i "$point" -w "$dir/$point.pcap" -U --immediate-mode -Z root -B 16384 $filter \
      2>"$dir/.tcpdump-$point.err" &
    pids+=($!); files+=("$dir/$point.pcap")
    note "tcpdump -i $point -> $point.pcap (pid $!)"
  done
  # Stop on duration or size, whichever first.
  max_bytes=$(awk -v m="$max_mb" 'BEGIN { printf "%d", m * 1048576 }')
  start=$(date +%s.%N)
  reason="duration ${duration}s reached"
  while :; do
    sleep 0.2
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || { reason="tcpdump exited"; break; }
    awk -v s="$start" -v n="$(date +%s.%N)" -v d="$duration" 'BEGIN { exit !(n - s >= d) }' && break
    big=0
    for f in "${files[@]}"; do
      [ -f "$f" ] && [ "$(stat -c %s "$f")" -ge "$max_bytes" ] && big=1
    done
    if [ "$big" = 1 ]; then reason="size limit ${max_mb} MB reached"; break; fi
  done
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  note "captures stopped: $reason"
  for point in "${points[@]}"; do
    stats=$(grep -h "packets" "$dir/.tcpdump-$point.err" 2>/dev/null | tr '\n' ' ')
    if [ -s "$dir/$point.pcap" ]; then
      note "tcpdump -i $point: $stats"
    else
      note "tcpdump -i $point wrote nothing: $(head -c 300 "$dir/.tcpdump-$point.err" | tr '\n' ' ')"
    fi
    rm -f "$dir/.tcpdump-$point.err"
  done
else
  note "skipped captures: tcpdump not installed (Debian package tcpdump)"
fi

# -- NAT state, right after the capture so it matches the traffic ----------------
save_rules ip
save_rules ip6
dump ipset-save.txt ipset ipset save
dump ipvsadm.txt ipvsadm ipvsadm -S -n
# kube-proxy nftables mode keeps everything in its own nft table (`ip kube-proxy`)
dump nft-ruleset.txt nftables nft list ruleset
dump nft-ruleset.json nftables nft -j list ruleset
# conntrack -L lists IPv4 only; the IPv6 entries go to the same file (one reader for both)
dump conntrack.txt conntrack conntrack -L
dump -a conntrack.txt conntrack conntrack -L -f ipv6
dump ip-addr.json iproute2 ip -j addr
dump ip-route.json iproute2 ip -j route

note "done: $dir"
echo "$dir"
