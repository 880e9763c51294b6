#!/bin/sh
# mmdebstrap's customize hook for the local box that `cargo xtask vm-test` builds where no box
# can be downloaded. $1: the root directory; $2: the UUID of the root filesystem.
set -eu
root=$1
uuid=$2

echo "UUID=$uuid / ext4 defaults,errors=remount-ro 0 1" > "$root/etc/fstab"
echo edge-box > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 edge-box\n' > "$root/etc/hosts"

# The user Vagrant logs in as: passwordless sudo, and Vagrant's published insecure public key,
# which `vagrant up` replaces with a key of its own.
chroot "$root" useradd --create-home --shell /bin/bash vagrant
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/vagrant"
chmod 440 "$root/etc/sudoers.d/vagrant"
install -d -m 700 "$root/home/vagrant/.ssh"
echo 'ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key' \
  > "$root/home/vagrant/.ssh/authorized_keys"
chmod 600 "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh

# Every VM gets its own SSH host keys, made at its first start (before sshd checks its config).
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
  > "$root/etc/systemd/system/ssh.service.d/host-keys.conf"

# DHCP on the NIC libvirt gives the VM (eth0: the kernel runs with net.ifnames=0).
printf '[Match]\nName=eth*\n\n[Network]\nDHCP=yes\n' > "$root/etc/systemd/network/80-dhcp.network"
systemctl --root="$root" enable systemd-networkd.service

# The servers are the tests' peers, which the tests start themselves, in namespaces; as on the
# CI host, none runs on its own.
for service in nginx knot nsd unbound varnish varnishncsa vsftpd; do
  systemctl --root="$root" disable "$service.service"
done
