//! How many connections may be open, in all and from one address: the proxy's HTTP
//! connections and the mailhook's SMTP sessions. A connection over a cap is refused at accept;
//! an admitted one holds a [`Permit`] until it closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The open connections, in all and per address.
pub struct Admission {
    max: usize,
    per_address: usize,
    open: Mutex<Open>,
    /// Woken when the last connection closes.
    empty: Notify,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    Address,
}

impl Admission {
    /// At most `max` connections, and `per_address` from one address (0: no cap per address).
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            max,
            per_address,
            open: Mutex::new(Open::default()),
            empty: Notify::new(),
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // Nothing panics while holding it; the counts stay consistent if anything did.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, or refuses it; the permit uncounts it when dropped.
    /// `exempt` spares it the cap per address (a trusted proxy carries many clients).
    /// IPv6 addresses count per /64 (a client usually holds a whole /64), as token creation's
    /// rate limit does.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, exempt: bool) -> Result<Permit, Refused> {
        let ip = network(ip);
        let capped = self.per_address > 0 && !exempt;
        let mut open = self.open();
        if open.total >= self.max {
            return Err(Refused::Total);
        }
        if capped {
            let n = open.by_address.entry(ip).or_insert(0);
            if *n >= self.per_address {
                return Err(Refused::Address);
            }
            *n += 1;
        }
        open.total += 1;
        Ok(Permit {
            admission: self.clone(),
            ip: capped.then_some(ip),
        })
    }

    pub fn total(&self) -> usize {
        self.open().total
    }

    /// Resolves once no connection is open.
    pub async fn closed(&self) {
        loop {
            let woken = self.empty.notified();
            if self.total() == 0 {
                return;
            }
            woken.await;
        }
    }
}

/// The address a connection counts under: an IPv4 address (also mapped into IPv6) itself, an
/// IPv6 address its /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// One counted connection.
pub struct Permit {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.admission.open();
        open.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = open.by_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.by_address.remove(&ip);
                }
            }
        }
        if open.total == 0 {
            self.admission.empty.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address() {
        let a = Admission::new(3, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let p1 = a.admit(ip, false).unwrap();
        let _p2 = a.admit(ip, false).unwrap();
        assert_eq!(a.admit(ip, false).err(), Some(Refused::Address));
        let p3 = a.admit(other, false).unwrap();
        assert_eq!(a.admit(other, false).err(), Some(Refused::Total));
        drop(p3);
        // a trusted proxy is not capped per address, only in all
        let _p4 = a.admit(proxy, true).unwrap();
        assert_eq!(a.admit(proxy, true).err(), Some(Refused::Total));
        drop(p1);
        assert_eq!(a.total(), 2);
        let _p5 = a.admit(ip, false).unwrap();
        assert_eq!(a.admit(ip, false).err(), Some(Refused::Total));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a = Admission::new(10, 2);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _p = (a.admit(one, false).unwrap(), a.admit(two, false).unwrap());
        assert_eq!(
            a.admit("2001:db8:1:2::77".parse().unwrap(), false).err(),
            Some(Refused::Address)
        );
        assert!(a.admit(other, false).is_ok());
        // an IPv4 address mapped into IPv6 is that IPv4 address
        let _q = a.admit("::ffff:192.0.2.1".parse().unwrap(), false).unwrap();
        let _r = a.admit("192.0.2.1".parse().unwrap(), false).unwrap();
        assert_eq!(
            a.admit("192.0.2.1".parse().unwrap(), false).err(),
            Some(Refused::Address)
        );
    }

    #[test]
    fn no_cap_per_address_when_zero() {
        let a = Admission::new(10, 0);
        let ip: IpAddr = "::1".parse().unwrap();
        let permits: Vec<_> = (0..10).map(|_| a.admit(ip, false).unwrap()).collect();
        assert_eq!(a.admit(ip, false).err(), Some(Refused::Total));
        drop(permits);
        assert_eq!(a.total(), 0);
        assert!(a.open().by_address.is_empty());
    }
}
