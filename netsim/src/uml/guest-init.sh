#!/bin/bash
# Init script of the kernel-lane guest (PID 1 inside User-Mode-Linux). One script serves both
# runners: ci/uml-run copies it (ci/uml-init is a link to this file) and netsim's library
# (netsim::uml, which embeds it with include_str!) writes it into its share directory; both boot
# it with init=; the share directory's host path arrives as the
# kernel parameter netsim_share=, which the kernel hands to init as an environment variable.
# Everything the runner needs back (exit code, module log) goes to that share directory.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

share_host=${netsim_share:?netsim_share= missing from the kernel command line}
share=/run/netsim-share

# Every process start costs tens of milliseconds in the guest: keep the external commands few.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$share" /run/netns /run/netsim-modroot/lib/modules
# Mount the share directory before /tmp is covered (it lies in the host's /tmp).
mount -t hostfs none "$share" -o "$share_host"

# The kernel normally mounts its devtmpfs on /dev at boot; where it did not, build /dev by hand
# (devtmpfs cannot be mounted over hostfs later). Without /dev/urandom ovs tools fail.
if [ ! -c /dev/null ] || [ ! -c /dev/urandom ]; then
    mount -t tmpfs -o mode=0755 tmpfs /dev
    mknod -m 666 /dev/null c 1 3
    mknod -m 666 /dev/zero c 1 5
    mknod -m 666 /dev/full c 1 7
    mknod -m 666 /dev/random c 1 8
    mknod -m 666 /dev/urandom c 1 9
    mknod -m 666 /dev/tty c 5 0
    mknod -m 600 /dev/console c 5 1
fi
[ -c /dev/tty1 ] || mknod -m 620 /dev/tty1 c 4 1
[ -c /dev/tty2 ] || mknod -m 620 /dev/tty2 c 4 2
mkdir -p /dev/net /dev/pts /dev/shm
[ -c /dev/net/tun ] || mknod -m 666 /dev/net/tun c 10 200
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp

# Writable host directories, one absolute path per line (parents come first).
if [ -s "$share/rw" ]; then
    while IFS= read -r dir; do
        [ -n "$dir" ] || continue
        case "$dir" in /tmp/* | /run/*) mkdir -p "$dir" ;; esac
        mount -t hostfs none "$dir" -o "$dir" || echo "netsim-uml: cannot mount $dir writable" >&2
    done <"$share/rw"
fi

# Modules: the host has no /lib/modules, so point modprobe at the UML tree through a private root,
# and make the kernel's own module autoload (e.g. generic netlink families) use the same wrapper.
read -r t_mods _ </proc/uptime
read -r _ _ kver _ </proc/version
modroot=/run/netsim-modroot
ln -s "/usr/lib/uml/modules/$kver" "$modroot/lib/modules/$kver"
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d %s "$@"\n' "$modroot" >/run/netsim-modprobe
chmod 755 /run/netsim-modprobe
echo /run/netsim-modprobe >/proc/sys/kernel/modprobe
# ipv6 FIRST: without it preloaded, creating an ODP vxlan vport hangs forever.
/run/netsim-modprobe ipv6 >>"$share/modules.log" 2>&1 || echo "modprobe ipv6 failed" >>"$share/modules.log"
# One modprobe for the rest: every process start is slow in the guest. A missing module only
# shows as absent in the capability probe (netsim doctor), which is what tests consult.
/run/netsim-modprobe -a openvswitch vport-vxlan sch_netem sch_tbf sch_htb sch_ingress veth vxlan \
    bridge dummy tun nf_tables configs >>"$share/modules.log" 2>&1 || echo "modprobe -a failed" >>"$share/modules.log"
read -r t_ready _ </proc/uptime
echo "uptime: modules from ${t_mods}s, ready at ${t_ready}s" >>"$share/modules.log"
# Tells a watching runner that the guest booted (netsim prints progress from it).
echo "$t_ready" >"$share/ready"
ip link set lo up 2>/dev/null || true

# Separate consoles: tty1 -> caller's stdout, tty2 -> caller's stderr (the kernel's own console,
# tty0, goes to the runner's log). Keep them open and stop the \n -> \r\n translation.
exec 5>/dev/tty1 6>/dev/tty2
stty -onlcr -opost <&5
stty -onlcr -opost <&6

rc=127
if [ -s "$share/argv" ]; then
    mapfile -d '' envs <"$share/env"
    mapfile -d '' argv <"$share/argv"
    cwd=$(cat "$share/cwd")
    if cd "$cwd"; then
        # A guard of our own, should the runner outside be killed before its timeout fires.
        guard=()
        [ -n "${netsim_timeout:-}" ] && guard=(timeout -k 5 "$netsim_timeout")
        "${guard[@]}" env -i "${envs[@]}" NETSIM_LANE=kernel TERM=dumb NO_COLOR=1 CARGO_TERM_COLOR=never \
            TMPDIR=/tmp "${argv[@]}" </dev/null >&5 2>&6
        rc=$?
    else
        echo "netsim-uml: cannot enter $cwd" >&6
    fi
fi
echo "$rc" >"$share/rc.tmp"
mv "$share/rc.tmp" "$share/rc"
exec 5>&- 6>&-
sync
echo o >/proc/sysrq-trigger
# Power-off is asynchronous: never let init exit (the kernel would panic).
sleep 60
