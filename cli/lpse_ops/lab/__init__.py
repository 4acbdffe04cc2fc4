"""The lab: real Debian 12 hosts as systemd containers, plus an offsite S3 host, on this machine."""
