#!/bin/sh
# Stage 2 of the leo-emu VM boot: PID 1 inside the host root (read-only 9p).
# Copied into the results share by vm-run.sh; runs cmd.sh (written by
# vm-run.sh: environment, working directory, the command), stores its exit
# code in /run/leoemu/rc, then powers the VM off. PID 1 must never exit.
X=/run/leoemu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
read -r up _ </proc/uptime
echo "$up" >"$X/stage2_seconds"
hostname leoemu-vm 2>/dev/null
ip link set lo up 2>/dev/null
# Warm the module cache in one process (autoloading them one by one costs a
# process start each under TCG, ~2 s in all). Nothing here decides what is
# "present": features.detect() still probes every feature itself.
modprobe -a -q veth bridge vxlan ipip ip_gre sit vrf sch_netem sch_tbf sch_htb \
    sch_fq sch_fq_codel sch_ingress nft_chain_nat nft_masq 2>/dev/null

read -r up _ </proc/uptime
echo "$up" >"$X/boot_seconds"
/bin/sh "$X/cmd.sh" </dev/null
rc=$?

read -r up _ </proc/uptime
echo "$up" >"$X/end_seconds"
echo "$rc" >"$X/rc.tmp" && mv "$X/rc.tmp" "$X/rc"
sync
umount "$X" 2>/dev/null
/bin/busybox poweroff -f
echo o >/proc/sysrq-trigger
sleep 10
