//! Admission of WebSockets: at most `--max-sockets-per-ip` from one address and `--max-sockets`
//! in all. A [`Seat`] is held for the socket's life and gives its place back when dropped.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

pub(crate) struct Admission {
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
    max_per_ip: usize,
    max_total: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    PerIp,
    Total,
}

/// One admitted socket's place.
pub(crate) struct Seat {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(max_per_ip: usize, max_total: usize) -> Self {
        Self {
            per_ip: DashMap::new(),
            total: AtomicUsize::new(0),
            max_per_ip,
            max_total,
        }
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Seat, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Seat {
            admission: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let a = &self.admission;
        if let Entry::Occupied(mut e) = a.per_ip.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        a.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_caps_and_seats_come_back() {
        let a = Arc::new(Admission::new(2, 3));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let s1 = a.admit(x).unwrap();
        let _s2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).err(), Some(Refusal::PerIp));
        let _s3 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).err(), Some(Refusal::Total));
        assert_eq!(a.open(), 3);
        drop(s1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(x).is_ok());
        assert_eq!(a.per_ip.len(), 2);
    }
}
