//! Who may hold a connection, decided the moment it is accepted.
//!
//! A device (an IPv4 address, an IPv6 /64: one phone holds many addresses
//! of its block) holds at most [`PER_DEVICE`] connections; its next one is
//! closed at once, before anything is read or allocated for it. All devices
//! together hold at most [`TOTAL`]; past that, an idle connection (one
//! waiting for a request's head) of the device holding the most makes room.
//! When none of the devices holding many ([`CUT_BUSY_FROM`] or more) has an
//! idle one, the oldest connection of the biggest of them is cut, busy or
//! not: requests whose bodies trickle in would otherwise keep every place
//! for as long as they trickle. A device holding a few, as a syncing client
//! does, loses only an idle one, and only after those holding many; a
//! trusted proxy, carrying others' requests, loses only idle ones too.
//!
//! A trusted reverse proxy carries many devices over its connections, so it
//! is not held to the per-device number; instead each device it forwards is,
//! counted by the requests it has in flight through the proxy
//! ([`Gate::forwarded`]).
//!
//! A device that meets its cap is named in the log once per
//! [`SAY_AGAIN_AFTER`], with how many of its connections were refused since
//! the last line: a device that keeps trying fills no journal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};

use crate::service::throttle::device_of;

/// Connections one device may hold. A sync takes one at a time, media sync
/// beside it another, and clients keep a few idle in their pools (AnkiDroid's
/// OkHttp up to 5, the desktop's reqwest one per request in flight); a
/// browser on the welcome page opens up to 6. 32 leaves room for several
/// devices behind one address (a guest network, a router's hairpin NAT).
pub(crate) const PER_DEVICE: usize = 32;

/// Connections held by all devices together. An idle connection costs about
/// 3.4 KiB of memory, one partway through a head about 4.4 KiB (measured,
/// README); 1,024 of them, under 5 MiB, stay far below the service's
/// 192 MiB memory ceiling, with room for the syncs themselves.
pub(crate) const TOTAL: usize = 1024;

/// A device holding at least this many connections may lose a busy one
/// when every place is taken and none is idle. A client syncing holds 1-3.
pub(crate) const CUT_BUSY_FROM: usize = 4;

/// How often one device's refusals are said in the log at most.
const SAY_AGAIN_AFTER: Duration = Duration::from_secs(600);

/// Devices whose refusals are remembered for the log at most.
const MAX_SAID: usize = 256;

pub(crate) struct Gate {
    inner: Mutex<Inner>,
    per_device: usize,
    total: usize,
}

#[derive(Default)]
struct Inner {
    /// Connections not told to go: those told give up their place at once,
    /// before they are gone.
    live: usize,
    devices: HashMap<IpAddr, Holder>,
    /// Requests in flight through trusted proxies, by the device forwarded.
    forwarded: HashMap<IpAddr, Holder>,
    next_id: u64,
    /// Refusals and when they were last said, by device (`None`: because
    /// every place was busy).
    said: HashMap<Option<IpAddr>, Said>,
}

#[derive(Default)]
struct Holder {
    open: usize,
    /// Its connections, each with the means to tell it to go: those
    /// waiting for a request, and those carrying one.
    idle: HashMap<u64, Sender<()>>,
    busy: HashMap<u64, Sender<()>>,
    /// A trusted proxy: its busy connections carry other devices' requests
    /// and are never cut.
    proxy: bool,
}

impl Holder {
    /// Connections not yet told to go.
    fn live(&self) -> usize {
        self.idle.len() + self.busy.len()
    }
}

struct Said {
    at: Instant,
    /// Refused since the last line.
    refused: u64,
}

/// Why a connection was not let in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its device holds [`PER_DEVICE`] already.
    Device,
    /// All [`TOTAL`] places are taken, and none may be given up.
    Full,
}

/// One admitted connection's place; freed when dropped.
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    device: IpAddr,
    id: u64,
    /// Closed by the gate when the place is wanted for someone else.
    told: Receiver<()>,
    /// Keeps the channel open for the ticket's life: it closes only when
    /// the gate says so, not when the gate forgets its own sender.
    _tell: Sender<()>,
}

/// One request forwarded by a trusted proxy, counted for its device.
pub(crate) struct Forwarded {
    gate: Arc<Gate>,
    device: IpAddr,
}

impl Gate {
    pub(crate) fn new(per_device: usize, total: usize) -> Arc<Gate> {
        Arc::new(Gate {
            inner: Mutex::default(),
            per_device,
            total,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a connection from `peer` in, or says why not. A `proxy`'s
    /// connections are not held to the per-device number.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr, proxy: bool) -> Result<Ticket, Refusal> {
        let device = device_of(peer);
        let mut inner = self.lock();
        let holder = inner.devices.entry(device).or_default();
        holder.proxy = proxy;
        if !proxy && holder.open >= self.per_device {
            let open = holder.open;
            inner.refused(Some(device), |refused| {
                log::warn!("{device}: holds {open} connections; refusing its new ones{refused}")
            });
            return Err(Refusal::Device);
        }
        if inner.live >= self.total && !inner.send_one_away() {
            let total = self.total;
            inner.refused(None, |refused| {
                log::warn!(
                    "all {total} connections are busy with requests; refusing new ones{refused}"
                )
            });
            if inner.devices.get(&device).is_some_and(|h| h.open == 0) {
                inner.devices.remove(&device);
            }
            return Err(Refusal::Full);
        }
        inner.live += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        let holder = inner.devices.get_mut(&device).expect("entered above");
        holder.open += 1;
        let (tell, told) = smol::channel::bounded(1);
        holder.busy.insert(id, tell.clone());
        Ok(Ticket {
            gate: self.clone(),
            device,
            id,
            told,
            _tell: tell,
        })
    }

    /// Counts a request a trusted proxy forwards for the device of `client`,
    /// or `None` when that device has [`PER_DEVICE`] in flight already.
    pub(crate) fn forwarded(self: &Arc<Self>, client: IpAddr) -> Option<Forwarded> {
        let device = device_of(client);
        let mut inner = self.lock();
        let holder = inner.forwarded.entry(device).or_default();
        if holder.open >= self.per_device {
            let open = holder.open;
            inner.refused(Some(device), |refused| {
                log::warn!(
                    "{device} (through a proxy): {open} requests in flight; refusing more{refused}"
                )
            });
            return None;
        }
        let holder = inner.forwarded.get_mut(&device).expect("entered above");
        holder.open += 1;
        Some(Forwarded {
            gate: self.clone(),
            device,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().live
    }
}

impl Inner {
    /// Counts a refusal for `who`, and says it through `say` (given what
    /// was refused since the last line) if that was long enough ago.
    fn refused(&mut self, who: Option<IpAddr>, say: impl FnOnce(String)) {
        let now = Instant::now();
        if self.said.len() >= MAX_SAID && !self.said.contains_key(&who) {
            self.said
                .retain(|_, said| now.duration_since(said.at) < SAY_AGAIN_AFTER);
        }
        if self.said.len() >= MAX_SAID && !self.said.contains_key(&who) {
            return;
        }
        let said = self.said.entry(who).or_insert(Said {
            at: now,
            refused: 0,
        });
        said.refused += 1;
        if said.refused == 1 || now.duration_since(said.at) >= SAY_AGAIN_AFTER {
            let before = said.refused - 1;
            say(if before > 0 {
                format!(" ({before} refused since the last such line)")
            } else {
                String::new()
            });
            said.at = now;
            said.refused = 1;
        }
    }

    /// Tells a connection to go; false if none may. In this order: an idle
    /// connection of the biggest holder among devices holding many
    /// ([`CUT_BUSY_FROM`] or more, not counting those already told); the
    /// oldest connection of the biggest of them (never a proxy's busy one);
    /// an idle connection of the biggest holder of the rest.
    fn send_one_away(&mut self) -> bool {
        let many = |h: &Holder| h.live() >= CUT_BUSY_FROM;
        let biggest = |devices: &HashMap<IpAddr, Holder>, fits: &dyn Fn(&Holder) -> bool| {
            devices
                .iter()
                .filter(|(_, h)| fits(h))
                .max_by_key(|(_, h)| h.live())
                .map(|(device, _)| *device)
        };
        let (device, idle) =
            if let Some(d) = biggest(&self.devices, &|h| many(h) && !h.idle.is_empty()) {
                (d, true)
            } else if let Some(d) = biggest(&self.devices, &|h| {
                many(h) && !h.proxy && !h.busy.is_empty()
            }) {
                (d, false)
            } else if let Some(d) = biggest(&self.devices, &|h| !h.idle.is_empty()) {
                (d, true)
            } else {
                return false;
            };
        let holder = self.devices.get_mut(&device).expect("found above");
        let tell = if idle {
            let id = *holder.idle.keys().next().expect("not empty");
            holder.idle.remove(&id).expect("found")
        } else {
            let open = holder.live();
            let id = *holder.busy.keys().min().expect("not empty");
            let tell = holder.busy.remove(&id).expect("found");
            self.refused(Some(device), |refused| {
                log::warn!(
                    "{device}: holds {open} connections, all busy, while every place is \
                     taken: cutting its oldest to make room{refused}"
                )
            });
            tell
        };
        tell.close();
        self.live -= 1;
        true
    }
}

/// Frees a place of `device`, and forgets the device when it holds none.
fn release(map: &mut HashMap<IpAddr, Holder>, device: IpAddr) {
    let Some(holder) = map.get_mut(&device) else {
        return;
    };
    holder.open -= 1;
    if holder.open == 0 {
        map.remove(&device);
    }
}

impl Ticket {
    /// The connection waits for a request.
    pub(crate) fn idle(&self) {
        self.move_to(true);
    }

    /// The connection carries a request. False if it was told to go (as an
    /// idle one, just before): it should close instead.
    pub(crate) fn busy(&self) -> bool {
        self.move_to(false);
        !self.told.is_closed()
    }

    fn move_to(&self, idle: bool) {
        let mut inner = self.gate.lock();
        if let Some(holder) = inner.devices.get_mut(&self.device) {
            let (from, to) = if idle {
                (&mut holder.busy, &mut holder.idle)
            } else {
                (&mut holder.idle, &mut holder.busy)
            };
            if let Some(tell) = from.remove(&self.id) {
                to.insert(self.id, tell);
            }
        }
    }

    /// Counts a request this connection carries for a device behind a
    /// trusted proxy ([`Gate::forwarded`]).
    pub(crate) fn forwarded(&self, client: IpAddr) -> Option<Forwarded> {
        self.gate.forwarded(client)
    }

    /// Whether its place was given to another connection.
    #[cfg(test)]
    pub(crate) fn told_to_go(&self) -> bool {
        self.told.is_closed()
    }

    /// Ends when the place is given to another connection: at once if it
    /// was.
    pub(crate) async fn wanted(&self) {
        let _ = self.told.recv().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        if !self.told.is_closed() {
            inner.live -= 1;
        }
        if let Some(holder) = inner.devices.get_mut(&self.device) {
            holder.idle.remove(&self.id);
            holder.busy.remove(&self.id);
        }
        release(&mut inner.devices, self.device);
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        release(&mut inner.forwarded, self.device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admit_n(gate: &Arc<Gate>, addr: &str, n: usize, proxy: bool) -> Vec<Ticket> {
        (0..n)
            .map(|_| gate.admit(ip(addr), proxy).unwrap())
            .collect()
    }

    #[test]
    fn a_device_holds_at_most_its_cap_and_gets_room_back() {
        let gate = Gate::new(3, 100);
        let held = admit_n(&gate, "10.0.0.2", 3, false);
        assert_eq!(
            gate.admit(ip("10.0.0.2"), false).err(),
            Some(Refusal::Device)
        );
        // Another device is not affected; neither is a proxy.
        let other = gate.admit(ip("10.0.0.3"), false).unwrap();
        for _ in 0..5 {
            std::mem::forget(gate.admit(ip("127.0.0.1"), true).unwrap());
        }
        drop(held);
        assert!(gate.admit(ip("10.0.0.2"), false).is_ok());
        drop(other);
    }

    #[test]
    fn ipv6_devices_are_their_64_blocks() {
        let gate = Gate::new(2, 100);
        let _a = gate.admit(ip("2001:db8:1:2::1"), false).unwrap();
        let _b = gate.admit(ip("2001:db8:1:2:ffff::9"), false).unwrap();
        assert_eq!(
            gate.admit(ip("2001:db8:1:2::77"), false).err(),
            Some(Refusal::Device)
        );
        assert!(gate.admit(ip("2001:db8:1:3::1"), false).is_ok());
    }

    #[test]
    fn when_full_an_idle_connection_of_the_biggest_holder_goes() {
        let gate = Gate::new(10, 5);
        let big = admit_n(&gate, "10.0.0.2", 3, false);
        let small = admit_n(&gate, "10.0.0.3", 2, false);
        // Nobody idle: the newcomer is refused.
        assert_eq!(gate.admit(ip("10.0.0.4"), false).err(), Some(Refusal::Full));
        small.iter().for_each(Ticket::idle);
        big[0].idle();
        big[1].idle();
        let newcomer = gate.admit(ip("10.0.0.4"), false).unwrap();
        let gone: Vec<bool> = big.iter().map(Ticket::told_to_go).collect();
        assert_eq!(gone.iter().filter(|g| **g).count(), 1);
        assert!(small.iter().all(|t| !t.told_to_go()));
        assert_eq!(gate.open(), 5);
        // The one told to go leaves; its place was already counted free.
        drop(big);
        assert_eq!(gate.open(), 3);
        drop((small, newcomer));
        assert_eq!(gate.open(), 0);
        assert!(gate.lock().devices.is_empty());
    }

    #[test]
    fn a_busy_connection_goes_only_from_a_device_holding_many() {
        let gate = Gate::new(10, 5);
        let few = admit_n(&gate, "10.0.0.2", 2, false);
        let many = admit_n(&gate, "10.0.0.3", 3, false);
        for t in few.iter().chain(&many) {
            t.idle();
            assert!(t.busy());
        }
        // Nobody idle, nobody holding CUT_BUSY_FROM: refused.
        assert_eq!(gate.admit(ip("10.0.0.4"), false).err(), Some(Refusal::Full));
        drop(few);
        let more = admit_n(&gate, "10.0.0.3", 2, false);
        // 10.0.0.3 holds 5, all busy: its oldest goes.
        let newcomer = gate.admit(ip("10.0.0.4"), false).unwrap();
        assert!(many[0].told_to_go());
        assert!(!many[1].told_to_go() && more.iter().all(|t| !t.told_to_go()));
        assert!(!newcomer.told_to_go());
        drop((many, more, newcomer));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn a_device_holding_few_keeps_even_its_idle_one_while_others_hold_many() {
        let gate = Gate::new(10, 5);
        let many = admit_n(&gate, "10.0.0.2", 4, false);
        many.iter().for_each(|t| assert!(t.busy()));
        let pooled = gate.admit(ip("10.0.0.3"), false).unwrap();
        pooled.idle();
        let _newcomer = gate.admit(ip("10.0.0.4"), false).unwrap();
        assert!(!pooled.told_to_go());
        assert!(many[0].told_to_go());
    }

    #[test]
    fn a_proxy_loses_no_busy_connection_and_the_told_do_not_count() {
        let gate = Gate::new(100, 6);
        let proxied = admit_n(&gate, "127.0.0.1", 4, true);
        proxied.iter().for_each(|t| assert!(t.busy()));
        let phone = admit_n(&gate, "10.0.0.5", 2, false);
        phone[0].idle();
        assert!(phone[1].busy());
        // Only the phone's idle one may go; its busy one and the proxy's stay.
        let _newcomer = gate.admit(ip("10.0.0.6"), false).unwrap();
        assert!(phone[0].told_to_go() && !phone[1].told_to_go());
        assert!(proxied.iter().all(|t| !t.told_to_go()));
        assert_eq!(gate.admit(ip("10.0.0.7"), false).err(), Some(Refusal::Full));
    }

    #[test]
    fn told_to_go_while_idle_means_close_rather_than_serve() {
        let gate = Gate::new(10, 1);
        let a = gate.admit(ip("10.0.0.2"), false).unwrap();
        a.idle();
        let _b = gate.admit(ip("10.0.0.3"), false).unwrap();
        assert!(!a.busy());
    }

    #[test]
    fn forwarded_devices_have_the_same_cap() {
        let gate = Gate::new(2, 100);
        let a = gate.forwarded(ip("192.168.1.5")).unwrap();
        let _b = gate.forwarded(ip("192.168.1.5")).unwrap();
        assert!(gate.forwarded(ip("192.168.1.5")).is_none());
        assert!(gate.forwarded(ip("192.168.1.6")).is_some());
        drop(a);
        assert!(gate.forwarded(ip("192.168.1.5")).is_some());
    }
}
