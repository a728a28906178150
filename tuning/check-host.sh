#!/usr/bin/env bash
# Reports the host settings Freshet cares about and what it would want changed. Changes nothing.
# Usage: bash tuning/check-host.sh [DATA_DIR]   (exit 0 always; read the WANT lines)
set -u
data_dir=${1:-./freshet-data}
report() { printf '%-28s %-24s %s\n' "$1" "$2" "$3"; }
report SETTING HAVE NOTE

memlock=$(ulimit -l)
if [[ $(id -u) -eq 0 ]]; then
  report "memlock (ulimit -l)" "$memlock KiB" "root is not charged; fine"
else
  report "memlock (ulimit -l)" "$memlock KiB" "WANT >= 8192 KiB for 2 shards with io_memory_bytes=1MiB"
fi
report "open files (ulimit -Hn)" "$(ulimit -Hn)" "WANT >= partitions + connections + 1000 (the broker raises its soft limit to this)"

thp=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo n/a)
report "transparent hugepages" "$thp" "madvise or never avoids compaction stalls"

gov=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)
report "cpu0 governor" "$gov" "WANT performance for steady tail latency"

if [[ -d $data_dir ]]; then
  dev=$(df --output=source "$data_dir" | tail -1)
  report "data dir filesystem" "$(df --output=fstype "$data_dir" | tail -1)" "$dev; xfs or ext4 support O_DIRECT"
fi
for f in net.core.somaxconn net.ipv4.tcp_max_syn_backlog vm.swappiness; do
  report "$f" "$(sysctl -n "$f" 2>/dev/null || echo n/a)" ""
done
