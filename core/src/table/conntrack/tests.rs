use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

type T4 = Tuple<Ipv4Addr>;

fn tuple(src: u8, dst: u8, sport: u16, dport: u16, proto: u8) -> T4 {
    Tuple::new(Ipv4Addr::new(10, 0, 0, src), Ipv4Addr::new(10, 0, 0, dst), sport, dport, proto, 0)
}

fn entry(o: T4, reply: T4, expires: u64, status: u8) -> CtEntry<Ipv4Addr, ()> {
    CtEntry { original: o, reply, expires: Instant::from_nanos(expires), status, serial: 0, proto: () }
}

const T0: Instant = Instant::ZERO;

#[test]
fn both_directions_are_found_and_nat_replies_too() {
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(8, 1);
    let o = tuple(2, 9, 40000, 53, 17);
    // Masqueraded: the reply comes back to the node's address 10.0.0.100, port 61000.
    let r = Tuple { dst: Ipv4Addr::new(10, 0, 0, 100), dport: 61000, ..o.reversed() };
    let id = t.insert(entry(o, r, 100, 0), T0, |_| false).unwrap();
    assert_eq!(t.lookup(&o, T0), Some((id, Dir::Original)));
    assert_eq!(t.lookup(&r, T0), Some((id, Dir::Reply)));
    assert_eq!(t.lookup(&o.reversed(), T0), None, "the untranslated reply is not this connection");
    // Another connection wanting the same translated tuple: refused, never shared.
    let o2 = tuple(3, 9, 40000, 53, 17);
    assert_eq!(t.insert(entry(o2, r, 100, 0), T0, |_| false), Err(InsertError::Clash));
    // Expired: invisible at once, and its tuples free for a new connection.
    let later = Instant::from_nanos(100);
    assert_eq!(t.lookup(&o, later), None);
    let id2 = t.insert(entry(o2, r, 500, 0), later, |_| false).unwrap();
    assert_eq!(t.lookup(&r, later), Some((id2, Dir::Reply)));
    assert_eq!(t.len(), 1);
}

#[test]
fn a_slot_taken_by_a_later_connection_does_not_answer_for_the_earlier() {
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(4, 3);
    let (a, b) = (tuple(2, 9, 40000, 53, 17), tuple(3, 9, 40001, 53, 17));
    // The caller's serial is replaced by the table's.
    let id = t.insert(CtEntry { serial: 77, ..entry(a, a.reversed(), 100, 0) }, T0, |_| false).unwrap();
    let first = t.serial(id);
    assert_eq!(first, 1, "the first insert's serial, never the caller's nor 0");
    assert_eq!(t.get(id).map(|e| e.serial), Some(first));
    assert!(t.get_mut_if(id, first).is_some());
    // `a` ends; `b` reuses its slot (the free list gives it back first).
    assert!(t.remove(id));
    assert!(!t.remove(id), "removed once");
    assert!(t.get_mut_if(id, first).is_none(), "an empty slot answers for nobody");
    let id_b = t.insert(entry(b, b.reversed(), 100, 0), T0, |_| false).unwrap();
    assert_eq!(id_b, id);
    assert_eq!(t.serial(id), first + 1);
    assert!(t.get_mut_if(id, first).is_none(), "a cache naming the slot for `a` must not reach `b`");
    assert_eq!(t.get_mut_if(id, first + 1).map(|e| e.original), Some(b));
}

#[test]
fn serials_never_reach_the_free_slots_bit_and_no_free_slot_answers_for_one() {
    // Serials run below `FREE` (a free slot's serial holds it and its free list
    // link), so no serial an insert gives can name a free slot, whatever the link.
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(4, 3);
    t.next_serial = FREE - 1;
    let (a, b) = (tuple(2, 9, 40000, 53, 17), tuple(3, 9, 40001, 53, 17));
    let id_a = t.insert(entry(a, a.reversed(), 100, 0), T0, |_| false).unwrap();
    let id_b = t.insert(entry(b, b.reversed(), 100, 0), T0, |_| false).unwrap();
    assert_eq!((t.serial(id_a), t.serial(id_b)), (FREE - 1, 1), "round to 1, past neither FREE nor 0");
    for (k, e) in t.slots.iter().enumerate() {
        assert_eq!(e.is_free(), e.serial & FREE != 0, "slot {k}");
    }
    assert!(t.remove(id_a));
    for serial in [0, 1, 2, FREE - 1] {
        assert!(t.get_mut_if(id_a, serial).is_none(), "a free slot answered for serial {serial}");
    }
}

#[test]
fn a_lookup_that_meets_an_expired_entry_by_its_reply_tuple_removes_it() {
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(8, 1);
    let o = tuple(2, 9, 40000, 53, 17);
    let r = Tuple { dst: Ipv4Addr::new(10, 0, 0, 100), dport: 61000, ..o.reversed() };
    let id = t.insert(entry(o, r, 100, 0), T0, |_| false).unwrap();
    // Live: a hit, by either direction, and nothing removed.
    let at = Instant::from_nanos(99);
    assert_eq!(t.lookup_mut_or_expired(&r, t.hash(&r), at).map(|(i, d, _)| (i, d)), Ok((id, Dir::Reply)));
    assert_eq!(t.len(), 1);
    // Expired, met by its reply tuple: a miss, and the entry gone with both index
    // entries (the original tuple is not found even as expired).
    let later = Instant::from_nanos(100);
    assert_eq!(t.lookup_mut_or_expired(&r, t.hash(&r), later).err(), Some(None));
    assert_eq!(t.len(), 0);
    assert!(t.get(id).is_none());
    assert_eq!(t.find_any_hashed(&o, t.hash(&o)), None);
    assert_eq!(t.find_any_hashed(&r, t.hash(&r)), None);
    // Its slot serves the next connection.
    assert_eq!(t.insert(entry(o, o.reversed(), 500, 0), later, |_| false), Ok(id));
}

#[test]
fn a_new_connection_takes_over_the_slot_of_an_expired_one_with_its_original_tuple() {
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(8, 1);
    let o = tuple(2, 9, 40000, 53, 17);
    // Masqueraded to port 61000, with destination NAT (a service's backend).
    let r_old = Tuple { dst: Ipv4Addr::new(10, 0, 0, 100), dport: 61000, ..o.reversed() };
    let id = t.insert(entry(o, r_old, 100, status::DST_NAT), T0, |_| false).unwrap();
    let serial = t.serial(id);
    let later = Instant::from_nanos(100);
    // The look-up of the new connection's first packet meets it, expired, by `o`.
    assert_eq!(t.lookup_mut_or_expired(&o, t.hash(&o), later).err(), Some(Some((id, serial))));
    assert_eq!(t.len(), 1, "left in place for the commit");
    // Stale hints are refused, and nothing changes: a wrong serial, a slot that is
    // not expired yet, another original tuple.
    let r_new = Tuple { dport: 61001, ..r_old };
    let h = t.hash(&r_new);
    assert_eq!(t.replace_expired((id, serial + 1), entry(o, r_new, 500, 0), (h, false), later), None);
    assert_eq!(t.replace_expired((id, serial), entry(o, r_new, 500, 0), (h, false), Instant::from_nanos(99)), None);
    let o2 = tuple(3, 9, 40000, 53, 17);
    assert_eq!(t.replace_expired((id, serial), entry(o2, r_new, 500, 0), (h, false), later), None);
    // A live connection holding the new reply tuple: a clash, the expired one kept.
    let holder = Tuple { src: Ipv4Addr::new(10, 0, 0, 7), ..r_new.reversed() };
    let other = t.insert(entry(holder, r_new, 1_000, 0), T0, |_| false).unwrap();
    assert_eq!(
        t.replace_expired((id, serial), entry(o, r_new, 500, 0), (h, false), later),
        Some(Err(InsertError::Clash))
    );
    assert_eq!(t.get(id).map(|e| e.reply), Some(r_old));
    // Expired too: it goes, and the new connection takes the slot.
    t.get_mut(other).unwrap().expires = later;
    assert_eq!(t.replace_expired((id, serial), entry(o, r_new, 500, 0), (h, false), later), Some(Ok(id)));
    assert!(t.get(other).is_none(), "the expired holder of the new reply tuple was removed");
    assert_eq!(t.len(), 1);
    assert!(t.serial(id) != serial, "a cache naming the old connection must not reach the new one");
    assert_eq!(t.lookup(&o, later), Some((id, Dir::Original)));
    assert_eq!(t.lookup(&r_new, later), Some((id, Dir::Reply)));
    assert_eq!(t.find_any_hashed(&r_old, t.hash(&r_old)), None, "the old reply tuple is not found");
    assert_eq!(t.index.len(), 2, "nor left behind in the index");
    // The old connection ended as if removed: its backend is told.
    let mut ended = vec![];
    t.drain_ended(|r| ended.push(*r));
    assert_eq!(ended, vec![r_old]);
    // The same reply tuple again (no NAT change): nothing moves in the index.
    let (serial, end) = (t.serial(id), Instant::from_nanos(500));
    assert_eq!(t.replace_expired((id, serial), entry(o, r_new, 900, 0), (h, false), end), Some(Ok(id)));
    assert_eq!(t.lookup(&r_new, end), Some((id, Dir::Reply)));
    // Removal still finds both index entries.
    assert!(t.remove(id));
    assert_eq!(t.find_any_hashed(&o, t.hash(&o)), None);
    assert_eq!(t.find_any_hashed(&r_new, h), None);
    // Met by its reply tuple, an expired entry is removed at once (no hint).
    let id = t.insert(entry(o, r_old, 1_000, 0), end, |_| false).unwrap();
    let gone = Instant::from_nanos(1_000);
    assert_eq!(t.lookup_mut_or_expired(&r_old, t.hash(&r_old), gone).err(), Some(None));
    assert!(t.get(id).is_none());
}

#[test]
fn a_full_table_drops_unassured_entries_only() {
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(4, 7);
    // Four established (assured) connections fill the table.
    for k in 0..4u8 {
        let o = tuple(k, 50, 1000, 80, 6);
        t.insert(entry(o, o.reversed(), 1_000, status::ASSURED), T0, |_| false).unwrap();
    }
    // A flood of new connections cannot evict them.
    for k in 0..100u16 {
        let o = tuple(60, 50, 2000 + k, 80, 6);
        assert_eq!(t.insert(entry(o, o.reversed(), 1_000, 0), T0, |_| false), Err(InsertError::Full));
    }
    assert_eq!((t.len(), t.early_drops), (4, 0));
    // Once one is no longer assured (say, closing), a new connection takes its place.
    let closing = t.lookup(&tuple(2, 50, 1000, 80, 6), T0).unwrap().0;
    t.get_mut(closing).unwrap().status = 0;
    let o = tuple(61, 50, 3000, 80, 6);
    assert!(t.insert(entry(o, o.reversed(), 1_000, 0), T0, |_| false).is_ok());
    assert_eq!(t.early_drops, 1);
    assert_eq!(t.lookup(&tuple(2, 50, 1000, 80, 6), T0), None);
    // An assured connection that is closing (TCP FIN_WAIT..CLOSE) may go too.
    let o2 = tuple(62, 50, 3001, 80, 6);
    let closing_port =
        |e: &CtEntry<Ipv4Addr, ()>| e.original.sport == 1000 && e.original.src == tuple(3, 50, 1000, 80, 6).src;
    assert!(t.insert(entry(o2, o2.reversed(), 1_000, 0), T0, closing_port).is_ok());
    assert_eq!(t.early_drops, 2);
    assert_eq!(t.lookup(&tuple(3, 50, 1000, 80, 6), T0), None);
}

#[test]
fn sweep_reclaims_expired_slots_a_few_at_a_time() {
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(100, 3);
    for k in 0..100u16 {
        let o = tuple(1, 2, k, 80, 6);
        t.insert(entry(o, o.reversed(), if k % 2 == 0 { 10 } else { 1_000 }, 0), T0, |_| false).unwrap();
    }
    let now = Instant::from_nanos(10);
    assert_eq!(t.sweep(now, 10), 5, "a bounded amount of work");
    let mut total = 5;
    for _ in 0..9 {
        total += t.sweep(now, 10);
    }
    assert_eq!((total, t.len()), (50, 50));
    assert_eq!(t.iter(now).count(), 50);
}

#[test]
fn an_ipv4_connection_with_its_index_is_small() {
    use crate::stage::conntrack::proto::ProtoState;
    // What the tables really allocate, at the default capacity, at a million and at
    // a capacity that is not a power of two (hashbrown rounds its buckets up).
    for capacity in [131_072, 1 << 20, 100_000] {
        let t = CtTable::<Ipv4Addr, ProtoState>::new(capacity, 1);
        let per = (t.memory() - ENDED_MAX * size_of::<T4>()) as f64 / capacity as f64;
        eprintln!("{per:.3} bytes per IPv4 connection at capacity {capacity}");
        // 124 a connection at a power of two (104 of entry, the free list in the free
        // entries, 20 of index: twice the buckets of the handles); a capacity just
        // above a power of two rounds each shard's buckets up (130 at 100,000). A
        // table adds 256 groups of hashbrown control bytes (16 each), the scratch list
        // of a shard rebuild, and its list of ended destination-NAT connections (64
        // KiB).
        let fixed = 256 * 16 + 4 * (2 * capacity / 256) * 2 + ENDED_MAX * size_of::<T4>();
        let most = if capacity.is_power_of_two() { 124 } else { 131 };
        assert!(t.memory() <= most * capacity + fixed, "{per:.3} bytes per IPv4 connection at capacity {capacity}");
    }
    // The entry, the largest state (TCP) included.
    assert_eq!(size_of::<CtEntry<Ipv4Addr, ProtoState>>(), 104);
}

#[test]
fn what_a_udp_hit_touches_lies_in_the_first_64_bytes_of_the_entry() {
    use crate::stage::conntrack::proto::ProtoState;
    let o = tuple(1, 2, 3, 4, 17);
    let e = CtEntry {
        original: o,
        reply: o.reversed(),
        expires: T0,
        status: 0,
        serial: 0,
        proto: ProtoState::Udp { stream_at: T0 },
    };
    let at = |p: *const u8, len: usize| p as usize - (&raw const e) as usize + len;
    let ProtoState::Udp { stream_at } = &e.proto else { unreachable!() };
    let end = [
        at((&raw const e.original).cast(), size_of::<T4>()),
        at((&raw const e.reply).cast(), size_of::<T4>()),
        at((&raw const e.expires).cast(), 8),
        at((&raw const e.status).cast(), 1),
        at((&raw const e.serial).cast(), 4),
        at((stream_at as *const Instant).cast(), 8),
    ];
    assert!(end.iter().all(|&x| x <= 64), "ends {end:?}");
    // The variant is told by the TCP state's byte (its niche): the first of the
    // protocol state, inside those 64 bytes too.
    use crate::stage::conntrack::tcp::TcpTrack;
    assert_eq!(core::mem::offset_of!(TcpTrack, state), 0);
    assert!(at((&raw const e.proto).cast(), 1) <= 64);
}

#[derive(Clone, Debug)]
enum Op {
    /// A new connection; `take_over`: the way the stages insert it, taking over
    /// the slot of an expired connection its look-up met by `o`, if any.
    Insert {
        o: T4,
        nat: bool,
        ttl: u64,
        assured: bool,
        take_over: bool,
    },
    Lookup(T4),
    Remove(usize),
    Advance(u64),
    Sweep(usize),
}

fn small_tuple() -> impl Strategy<Value = T4> {
    (0u8..3, 3u8..6, 0u16..3, 0u16..2, prop_oneof![Just(6u8), Just(17u8)])
        .prop_map(|(s, d, sp, dp, p)| tuple(s, d, sp, dp, p))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (small_tuple(), any::<bool>(), 1u64..50, any::<bool>(), any::<bool>())
            .prop_map(|(o, nat, ttl, assured, take_over)| Op::Insert { o, nat, ttl, assured, take_over }),
        4 => small_tuple().prop_map(Op::Lookup),
        4 => small_tuple().prop_map(|t| Op::Lookup(t.reversed())),
        1 => (0usize..8).prop_map(Op::Remove),
        2 => (1u64..20).prop_map(Op::Advance),
        1 => (1usize..40).prop_map(Op::Sweep),
    ]
}

proptest! {
    /// The table against a list scanned linearly: inserts (with clashes and expired
    /// holders), lookups in both directions, removals, expiry and sweeps.
    #[test]
    fn table_matches_a_linear_model(ops in proptest::collection::vec(op(), 1..200)) {
        let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(1024, 9);
        // (original, reply, expires, id)
        let mut model: Vec<(T4, T4, u64, CtId)> = Vec::new();
        let mut now = 0u64;
        for op in ops {
            let at = Instant::from_nanos(now);
            match op {
                Op::Insert { o, nat, ttl, assured, take_over } => {
                    let r = if nat { Tuple { dst: Ipv4Addr::new(10, 0, 0, 100), ..o.reversed() } } else { o.reversed() };
                    let holders: Vec<usize> = model.iter().enumerate()
                        .filter(|(_, m)| [o, r].iter().any(|x| *x == m.0 || *x == m.1))
                        .map(|(i, _)| i).collect();
                    let live_clash = holders.iter().any(|&i| model[i].2 > now);
                    let status = if assured { status::ASSURED } else { 0 };
                    let e = entry(o, r, now + ttl, status);
                    let hint = t.lookup_mut_or_expired(&o, t.hash(&o), at).err().flatten().filter(|_| take_over);
                    let got = match hint.and_then(|h| t.replace_expired(h, e, (t.hash(&r), false), at)) {
                        Some(got) => {
                            prop_assert!(got.is_err() || got == Ok(hint.unwrap().0), "the slot taken over");
                            got
                        }
                        None => t.insert(e, at, |_| false),
                    };
                    if live_clash {
                        prop_assert_eq!(got, Err(InsertError::Clash));
                    } else {
                        let id = got.unwrap();
                        model.retain(|m| ![o, r].iter().any(|x| *x == m.0 || *x == m.1));
                        model.push((o, r, now + ttl, id));
                    }
                }
                Op::Lookup(x) => {
                    let want = model.iter().find(|m| m.2 > now && (m.0 == x || m.1 == x))
                        .map(|m| (m.3, if m.0 == x { Dir::Original } else { Dir::Reply }));
                    prop_assert_eq!(t.lookup(&x, at), want);
                }
                Op::Remove(k) => {
                    // A live one (an expired one may have been swept already).
                    let live: Vec<usize> = (0..model.len()).filter(|&i| model[i].2 > now).collect();
                    if !live.is_empty() {
                        let m = model.remove(live[k % live.len()]);
                        prop_assert_eq!(t.get(m.3).map(|e| e.original), Some(m.0));
                        prop_assert!(t.remove(m.3));
                    }
                }
                Op::Advance(d) => now += d,
                Op::Sweep(b) => {
                    t.sweep(at, b);
                }
            }
            prop_assert_eq!(t.index.len(), 2 * t.len(), "two index entries an entry, none left behind");
            let live_model = model.iter().filter(|m| m.2 > now).count();
            prop_assert_eq!(t.iter(Instant::from_nanos(now)).count(), live_model);
            prop_assert!(t.len() <= model.len(), "swept entries are gone from the table only");
        }
    }
}

#[test]
fn tuples_that_differ_in_any_one_field_are_different_to_the_probe() {
    // The probe compares words, not fields (`TupleAddr::tuple_eq`): every field must
    // still count. (Through the table, a wrong compare would show only on a hash
    // collision.)
    let a = Tuple::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 40000, 53, 17, 7);
    assert!(Ipv4Addr::tuple_eq(&a, &{ a }));
    let others = [
        Tuple { src: Ipv4Addr::new(10, 0, 0, 3), ..a },
        Tuple { src: Ipv4Addr::new(11, 0, 0, 1), ..a },
        Tuple { dst: Ipv4Addr::new(10, 0, 0, 3), ..a },
        Tuple { dst: Ipv4Addr::new(11, 0, 0, 2), ..a },
        Tuple { sport: 40001, ..a },
        Tuple { dport: 54, ..a },
        Tuple { proto: 6, ..a },
        Tuple { zone: 8, ..a },
        a.reversed(),
    ];
    for b in others {
        assert!(!Ipv4Addr::tuple_eq(&a, &b) && !Ipv4Addr::tuple_eq(&b, &a) && a != b, "{b:?}");
    }
    let v6 = |t: &T4| {
        let m = |x: Ipv4Addr| x.to_ipv6_mapped();
        Tuple::new(m(t.src), m(t.dst), t.sport, t.dport, t.proto, t.zone)
    };
    assert!(Ipv6Addr::tuple_eq(&v6(&a), &v6(&a)));
    for b in others {
        assert!(!Ipv6Addr::tuple_eq(&v6(&a), &v6(&b)), "{b:?}");
    }
}

#[test]
fn churn_at_a_full_table_never_grows_the_index() {
    // A full table whose connections are replaced one by one (each insert early-drops
    // an unassured one), as a SYN flood at capacity does: hashbrown's removals leave
    // tombstones. One table for the whole index, sized for twice the handles, filled
    // with them and was rebuilt at twice the size inside an insert (at a million
    // connections, after 9.5 million replacements, in one 100 ms insert). The shards
    // sized as they are here (half their buckets used) fill too, and grow, when the
    // sweep does not rebuild them (`left: 17950720` with `maintain` switched off).
    let capacity: u32 = 1 << 18;
    let mut t: CtTable<Ipv4Addr, ()> = CtTable::new(capacity as usize, 5);
    let memory = t.memory();
    let now = Instant::from_nanos(1);
    for k in 0..capacity + 2_000_000 {
        let o = Tuple::new(
            Ipv4Addr::from(0x0a00_0000 | (k >> 16)),
            Ipv4Addr::new(192, 168, 0, 1),
            (k & 0xffff) as u16,
            53,
            17,
            0,
        );
        let e = CtEntry {
            original: o,
            reply: o.reversed(),
            expires: Instant::from_nanos(u64::MAX),
            status: 0,
            serial: 0,
            proto: (),
        };
        assert!(t.insert(e, now, |_| false).is_ok(), "replacement {k}");
        // A batch of 32 new connections, then the commit stage's sweep.
        if k % 32 == 31 {
            t.sweep(now, 8);
        }
    }
    assert_eq!(t.len(), capacity as usize);
    assert_eq!(t.memory(), memory, "the index was rebuilt larger");
    assert!(t.index_rebuilds() > 0, "no shard had tombstones to clear");
}
