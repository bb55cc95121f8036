//! Counters of the user-mode NAT and the "warn once" rule.

/// Counters of one user-mode backend. Flow counts are current values;
/// everything else counts events since the backend was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserNetStats {
    /// TCP flows now held (connecting, open, or closing).
    pub tcp_flows: u64,
    /// UDP flows now held (outbound, and host peers of UDP forwards).
    pub udp_flows: u64,
    /// ICMP echo relays now held.
    pub icmp_flows: u64,
    /// Guest SYNs (or forwarded connections) refused: TCP flow limit.
    pub tcp_refused_limit: u64,
    /// Guest datagrams (or forwarded peers) dropped: UDP flow limit.
    pub udp_refused_limit: u64,
    /// Guest pings dropped: ICMP relay limit.
    pub icmp_refused_limit: u64,
    /// Guest TCP connections refused by policy (restrict, loopback off,
    /// martian or in-subnet destination).
    pub tcp_refused_policy: u64,
    /// Guest UDP datagrams refused by policy.
    pub udp_refused_policy: u64,
    /// Host connects that failed (refused, unreachable, timed out).
    pub connect_failed: u64,
    /// TCP connections accepted on forwards.
    pub hostfwd_accepted: u64,
    /// Pings relayed to the world.
    pub icmp_relayed: u64,
    /// Pings dropped because the host forbids unprivileged ICMP sockets.
    pub icmp_unavailable: u64,
    /// Addresses leased by the DHCP server.
    pub dhcp_leases: u64,
    /// DHCP replies sent (offers, acks, naks).
    pub dhcp_replies: u64,
    /// IPv6 frames dropped.
    pub dropped_ipv6: u64,
    /// Frames dropped as not handled (other ethertypes, protocols, pings
    /// to nowhere, broadcasts, frames for other MACs).
    pub dropped_other: u64,
    /// Frames dropped as malformed (truncated, bad lengths or checksums,
    /// IP fragments).
    pub dropped_malformed: u64,
    /// Frames for the guest dropped because its queue was full.
    pub dropped_queue_full: u64,
}

impl UserNetStats {
    /// The non-zero counters of refused or dropped traffic, as
    /// `name=value` words (empty when nothing was refused or dropped).
    pub fn problems(&self) -> Vec<String> {
        [
            ("tcp_refused_limit", self.tcp_refused_limit),
            ("udp_refused_limit", self.udp_refused_limit),
            ("icmp_refused_limit", self.icmp_refused_limit),
            ("tcp_refused_policy", self.tcp_refused_policy),
            ("udp_refused_policy", self.udp_refused_policy),
            ("connect_failed", self.connect_failed),
            ("icmp_unavailable", self.icmp_unavailable),
            ("dropped_ipv6", self.dropped_ipv6),
            ("dropped_other", self.dropped_other),
            ("dropped_malformed", self.dropped_malformed),
            ("dropped_queue_full", self.dropped_queue_full),
        ]
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
    }
}

/// Which one-time warnings were printed.
#[derive(Debug, Default)]
pub(crate) struct Warned {
    pub tcp_limit: bool,
    pub udp_limit: bool,
    pub icmp_limit: bool,
    pub icmp_unavailable: bool,
    pub fds: bool,
}

/// Prints `tapir: warning: {name}: {msg}` the first time `flag` is seen unset.
pub(crate) fn warn_once(flag: &mut bool, name: &str, msg: impl FnOnce() -> String) {
    if !*flag {
        *flag = true;
        eprintln!("tapir: warning: {name}: {}", msg());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn problems_lists_only_nonzero_drop_counters() {
        let mut s = super::UserNetStats::default();
        assert!(s.problems().is_empty());
        s.tcp_flows = 3; // not a problem
        s.connect_failed = 2;
        s.dropped_ipv6 = 1;
        assert_eq!(s.problems(), vec!["connect_failed=2", "dropped_ipv6=1"]);
    }

    #[test]
    fn warns_once() {
        let mut f = false;
        let mut calls = 0;
        for _ in 0..3 {
            super::warn_once(&mut f, "net0", || {
                calls += 1;
                "x".into()
            });
        }
        assert!(f);
        assert_eq!(calls, 1);
    }
}
