//! The authorizer: may this principal, from this host, do this operation on this resource?
//! Kafka's `StandardAuthorizer` rules, as a pure function of the ACL set:
//!
//! - the authorizer off (the default): everything is allowed, as a Kafka broker without
//!   `authorizer.class.name`;
//! - a super user (`super_users`, Kafka's `super.users`: `User:admin;User:ops`) may do anything;
//! - the bindings that apply are those whose pattern covers the resource (a literal of its
//!   name, the literal wildcard `*`, a prefix of its name), whose principal is the caller's or
//!   `User:*`, and whose host is the caller's IP or `*`;
//! - a DENY that applies (its operation the one asked, or ALL) wins over every ALLOW;
//! - an ALLOW applies when its operation is the one asked or ALL; DESCRIBE is also implied by
//!   an ALLOW of READ, WRITE, DELETE or ALTER, and DESCRIBE_CONFIGS by ALTER_CONFIGS;
//! - no binding at all on the resource (for anyone): `allow_everyone_if_no_acl_found`
//!   (default false), else denied.
//!
//! [`Authorizer::authorize_by_resource_type`] is Kafka's `Authorizer.authorizeByResourceType`
//! (KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some
//! topic). [`Authorizer::authorized_operations`] is the bit set Metadata, DescribeCluster and
//! the group descriptions report.
//!
//! Cost: a check looks up one range of the ordered set per prefix of the resource name (plus
//! the wildcard), so it is O(name length x log bindings), never a scan of every binding.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::acl::{
    AclBinding, AclOperation, AclPermission, PatternType, ResourceType, WILDCARD,
    WILDCARD_PRINCIPAL,
};

/// The authorizer's settings (from `BrokerConfig`: `authorizer`, `super_users`,
/// `allow_everyone_if_no_acl_found`).
#[derive(Debug, Clone, Copy)]
pub struct Authorizer<'a> {
    /// Off: every request is allowed (the default broker).
    pub enabled: bool,
    /// Kafka's `super.users`: principals separated by `;`.
    pub super_users: &'a str,
    /// Kafka's `allow.everyone.if.no.acl.found`.
    pub allow_everyone_if_no_acl_found: bool,
}

/// Who asks: a principal (`User:alice`) and the client's IP address as text.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a str,
    pub host: &'a str,
}

impl Authorizer<'_> {
    /// Whether `principal` is one of the super users.
    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.split(';').any(|s| s.trim() == principal)
    }

    /// May `caller` do `operation` on the resource `(resource_type, name)`?
    pub fn authorize(
        &self,
        acls: &BTreeSet<AclBinding>,
        caller: Caller<'_>,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.is_super_user(caller.principal) {
            return true;
        }
        let mut found = false;
        let mut allowed = false;
        for acl in covering(acls, resource_type, name) {
            found = true;
            match verdict(acl, caller, operation) {
                Some(AclPermission::Deny) => return false,
                Some(AclPermission::Allow) => allowed = true,
                _ => {}
            }
        }
        allowed || (!found && self.allow_everyone_if_no_acl_found)
    }

    /// Kafka's `authorizeByResourceType`: may `caller` do `operation` on at least one resource
    /// of `resource_type`? Yes when a (hard-coded) resource with no ACLs would be allowed
    /// (super users, `allow_everyone_if_no_acl_found`), or an ALLOW on the wildcard, or an
    /// ALLOW on a literal or prefix that no DENY (same literal, or a prefix of it) dominates;
    /// a DENY on the literal wildcard refuses at once.
    pub fn authorize_by_resource_type(
        &self,
        acls: &BTreeSet<AclBinding>,
        caller: Caller<'_>,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if self.authorize(acls, caller, operation, resource_type, "hardcode") {
            return true;
        }
        let mut deny_literal = BTreeSet::new();
        let mut deny_prefixed = BTreeSet::new();
        let mut allows = Vec::new();
        for acl in of_type(acls, resource_type) {
            let applies = (acl.host == WILDCARD || acl.host == caller.host)
                && (acl.principal == caller.principal || acl.principal == WILDCARD_PRINCIPAL)
                && (acl.operation == operation || acl.operation == AclOperation::All);
            if !applies {
                continue;
            }
            match (acl.permission, acl.pattern_type) {
                (AclPermission::Deny, PatternType::Literal) if acl.resource_name == WILDCARD => {
                    return false
                }
                (AclPermission::Deny, PatternType::Literal) => {
                    deny_literal.insert(acl.resource_name.as_str());
                }
                (AclPermission::Deny, PatternType::Prefixed) => {
                    deny_prefixed.insert(acl.resource_name.as_str());
                }
                (AclPermission::Allow, PatternType::Literal) if acl.resource_name == WILDCARD => {
                    return true
                }
                (AclPermission::Allow, _) => allows.push(acl),
                _ => {}
            }
        }
        allows.iter().any(|allow| {
            let name = allow.resource_name.as_str();
            let literal_denied =
                allow.pattern_type == PatternType::Literal && deny_literal.contains(name);
            let prefix_denied = name
                .char_indices()
                .map(|(i, c)| &name[..i + c.len_utf8()])
                .any(|prefix| deny_prefixed.contains(prefix));
            !literal_denied && !prefix_denied
        })
    }

    /// The operations `caller` may do on the resource, as Kafka's authorized-operations bit
    /// set (bit `1 << code` per operation of `ResourceType::supported_operations`).
    pub fn authorized_operations(
        &self,
        acls: &BTreeSet<AclBinding>,
        caller: Caller<'_>,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        resource_type
            .supported_operations()
            .iter()
            .filter(|op| self.authorize(acls, caller, **op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

/// Whether `acl` (already known to cover the resource) allows or denies `operation` for
/// `caller`, or says nothing (Kafka's `StandardAuthorizerData.findResult`).
fn verdict(acl: &AclBinding, caller: Caller<'_>, operation: AclOperation) -> Option<AclPermission> {
    if acl.principal != caller.principal && acl.principal != WILDCARD_PRINCIPAL {
        return None;
    }
    if acl.host != WILDCARD && acl.host != caller.host {
        return None;
    }
    let same = acl.operation == AclOperation::All || acl.operation == operation;
    match acl.permission {
        AclPermission::Deny if same => Some(AclPermission::Deny),
        AclPermission::Allow if same => Some(AclPermission::Allow),
        AclPermission::Allow => {
            use AclOperation as O;
            let implied = match operation {
                O::Describe => matches!(acl.operation, O::Read | O::Write | O::Delete | O::Alter),
                O::DescribeConfigs => acl.operation == O::AlterConfigs,
                _ => false,
            };
            implied.then_some(AclPermission::Allow)
        }
        _ => None,
    }
}

/// The bindings whose name is exactly `name`, of `resource_type`: one range of the set.
fn named<'a>(
    acls: &'a BTreeSet<AclBinding>,
    resource_type: ResourceType,
    name: &'a str,
) -> impl Iterator<Item = &'a AclBinding> + 'a {
    let low = lowest(resource_type, name.to_string());
    acls.range((Bound::Included(low), Bound::Unbounded))
        .take_while(move |a| a.resource_type == resource_type && a.resource_name == name)
}

/// Every binding of `resource_type`: one range of the set.
fn of_type(
    acls: &BTreeSet<AclBinding>,
    resource_type: ResourceType,
) -> impl Iterator<Item = &AclBinding> {
    acls.range((
        Bound::Included(lowest(resource_type, String::new())),
        Bound::Unbounded,
    ))
    .take_while(move |a| a.resource_type == resource_type)
}

/// The smallest binding of `(resource_type, name)` in the set's order.
fn lowest(resource_type: ResourceType, resource_name: String) -> AclBinding {
    AclBinding {
        resource_type,
        resource_name,
        pattern_type: PatternType::Unknown,
        principal: String::new(),
        host: String::new(),
        operation: AclOperation::Unknown,
        permission: AclPermission::Unknown,
    }
}

/// The bindings whose pattern covers `(resource_type, name)`: the literal name, the literal
/// wildcard, and every prefix of the name as a PREFIXED pattern.
fn covering<'a>(
    acls: &'a BTreeSet<AclBinding>,
    resource_type: ResourceType,
    name: &'a str,
) -> impl Iterator<Item = &'a AclBinding> + 'a {
    let literal =
        named(acls, resource_type, name).filter(|a| a.pattern_type == PatternType::Literal);
    let wildcard = (name != WILDCARD)
        .then(|| {
            named(acls, resource_type, WILDCARD).filter(|a| a.pattern_type == PatternType::Literal)
        })
        .into_iter()
        .flatten();
    let prefixed = name
        .char_indices()
        .map(move |(i, c)| &name[..i + c.len_utf8()])
        .flat_map(move |prefix| named(acls, resource_type, prefix))
        .filter(|a| a.pattern_type == PatternType::Prefixed);
    literal.chain(wildcard).chain(prefixed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AclOperation as O;
    use AclPermission::{Allow, Deny};
    use PatternType::{Literal, Prefixed};
    use ResourceType::{Cluster, Group, Topic, TransactionalId};

    const ALICE: Caller = Caller {
        principal: "User:alice",
        host: "192.168.0.1",
    };
    const BOB: Caller = Caller {
        principal: "User:bob",
        host: "192.168.0.2",
    };

    fn on() -> Authorizer<'static> {
        Authorizer {
            enabled: true,
            super_users: "User:admin; User:ops",
            allow_everyone_if_no_acl_found: false,
        }
    }

    fn acl(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        principal: &str,
        host: &str,
        op: AclOperation,
        perm: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: host.into(),
            operation: op,
            permission: perm,
        }
    }

    fn set(acls: &[AclBinding]) -> BTreeSet<AclBinding> {
        acls.iter().cloned().collect()
    }

    #[test]
    fn off_allows_everything_and_super_users_bypass_deny() {
        let acls = set(&[acl(Topic, "*", Literal, "User:*", "*", O::All, Deny)]);
        let off = Authorizer {
            enabled: false,
            ..on()
        };
        assert!(off.authorize(&acls, ALICE, O::Read, Topic, "t"));
        assert!(!on().authorize(&acls, ALICE, O::Read, Topic, "t"));
        let admin = Caller {
            principal: "User:ops",
            host: "1.2.3.4",
        };
        assert!(on().authorize(&acls, admin, O::Read, Topic, "t"));
        assert!(on().authorize_by_resource_type(&acls, admin, O::Write, Topic));
    }

    #[test]
    fn no_acls_follows_allow_everyone_if_no_acl_found() {
        let empty = BTreeSet::new();
        assert!(!on().authorize(&empty, ALICE, O::Read, Topic, "t"));
        let open = Authorizer {
            allow_everyone_if_no_acl_found: true,
            ..on()
        };
        assert!(open.authorize(&empty, ALICE, O::Read, Topic, "t"));
        // An ACL on the resource for someone else: no longer "no ACL found".
        let acls = set(&[acl(Topic, "t", Literal, "User:bob", "*", O::Read, Allow)]);
        assert!(!open.authorize(&acls, ALICE, O::Read, Topic, "t"));
        assert!(open.authorize(&acls, ALICE, O::Read, Topic, "u"));
    }

    #[test]
    fn literal_wildcard_and_prefixed_patterns_cover_their_resources() {
        let acls = set(&[
            acl(Topic, "orders", Literal, "User:alice", "*", O::Write, Allow),
            acl(Group, "*", Literal, "User:alice", "*", O::Read, Allow),
            acl(Topic, "logs-", Prefixed, "User:alice", "*", O::Read, Allow),
        ]);
        let a = on();
        assert!(a.authorize(&acls, ALICE, O::Write, Topic, "orders"));
        assert!(!a.authorize(&acls, ALICE, O::Write, Topic, "orders2"));
        assert!(!a.authorize(&acls, ALICE, O::Read, Topic, "orders"));
        assert!(a.authorize(&acls, ALICE, O::Read, Group, "any-group"));
        assert!(a.authorize(&acls, ALICE, O::Read, Topic, "logs-app"));
        assert!(a.authorize(&acls, ALICE, O::Read, Topic, "logs-"));
        assert!(!a.authorize(&acls, ALICE, O::Read, Topic, "logs"));
        assert!(!a.authorize(&acls, BOB, O::Read, Topic, "logs-app"));
        // The resource type must match too.
        assert!(!a.authorize(&acls, ALICE, O::Read, TransactionalId, "logs-app"));
    }

    #[test]
    fn deny_beats_allow_whatever_the_pattern() {
        let acls = set(&[
            acl(Topic, "*", Literal, "User:*", "*", O::All, Allow),
            acl(Topic, "secret-", Prefixed, "User:alice", "*", O::Read, Deny),
        ]);
        assert!(on().authorize(&acls, ALICE, O::Read, Topic, "public"));
        assert!(!on().authorize(&acls, ALICE, O::Read, Topic, "secret-x"));
        // A DENY of READ does not deny WRITE, nor the DESCRIBE that ALL allows.
        assert!(on().authorize(&acls, ALICE, O::Write, Topic, "secret-x"));
        assert!(on().authorize(&acls, ALICE, O::Describe, Topic, "secret-x"));
        assert!(on().authorize(&acls, BOB, O::Read, Topic, "secret-x"));
    }

    #[test]
    fn read_write_delete_alter_imply_describe_and_alter_configs_describe_configs() {
        for op in [O::Read, O::Write, O::Delete, O::Alter] {
            let acls = set(&[acl(Topic, "t", Literal, "User:alice", "*", op, Allow)]);
            assert!(
                on().authorize(&acls, ALICE, O::Describe, Topic, "t"),
                "{op:?}"
            );
            assert!(!on().authorize(&acls, ALICE, O::DescribeConfigs, Topic, "t"));
        }
        let acls = set(&[acl(
            Topic,
            "t",
            Literal,
            "User:alice",
            "*",
            O::AlterConfigs,
            Allow,
        )]);
        assert!(on().authorize(&acls, ALICE, O::DescribeConfigs, Topic, "t"));
        assert!(!on().authorize(&acls, ALICE, O::Describe, Topic, "t"));
        // CREATE does not imply DESCRIBE.
        let acls = set(&[acl(
            Topic,
            "t",
            Literal,
            "User:alice",
            "*",
            O::Create,
            Allow,
        )]);
        assert!(!on().authorize(&acls, ALICE, O::Describe, Topic, "t"));
    }

    #[test]
    fn host_and_principal_wildcards() {
        let acls = set(&[
            acl(
                Topic,
                "t",
                Literal,
                "User:alice",
                "192.168.0.1",
                O::Read,
                Allow,
            ),
            acl(Topic, "u", Literal, "User:*", "*", O::Read, Allow),
            acl(
                Topic,
                "u",
                Literal,
                "User:bob",
                "192.168.0.2",
                O::Read,
                Deny,
            ),
        ]);
        assert!(on().authorize(&acls, ALICE, O::Read, Topic, "t"));
        let elsewhere = Caller {
            host: "10.0.0.9",
            ..ALICE
        };
        assert!(!on().authorize(&acls, elsewhere, O::Read, Topic, "t"));
        assert!(on().authorize(&acls, ALICE, O::Read, Topic, "u"));
        assert!(!on().authorize(&acls, BOB, O::Read, Topic, "u"));
        let bob_elsewhere = Caller {
            host: "10.0.0.9",
            ..BOB
        };
        assert!(on().authorize(&acls, bob_elsewhere, O::Read, Topic, "u"));
    }

    #[test]
    fn by_resource_type_as_kip_679() {
        let a = on();
        let none = BTreeSet::new();
        assert!(!a.authorize_by_resource_type(&none, ALICE, O::Write, Topic));
        let one = set(&[acl(Topic, "t", Literal, "User:alice", "*", O::Write, Allow)]);
        assert!(a.authorize_by_resource_type(&one, ALICE, O::Write, Topic));
        assert!(!a.authorize_by_resource_type(&one, BOB, O::Write, Topic));
        assert!(!a.authorize_by_resource_type(&one, ALICE, O::Write, Group));
        // The same literal denied: nothing left.
        let denied = set(&[
            acl(Topic, "t", Literal, "User:alice", "*", O::Write, Allow),
            acl(Topic, "t", Literal, "User:alice", "*", O::Write, Deny),
        ]);
        assert!(!a.authorize_by_resource_type(&denied, ALICE, O::Write, Topic));
        // A prefix deny dominating the allowed prefix.
        let dominated = set(&[
            acl(Topic, "abc", Prefixed, "User:alice", "*", O::Write, Allow),
            acl(Topic, "ab", Prefixed, "User:alice", "*", O::Write, Deny),
        ]);
        assert!(!a.authorize_by_resource_type(&dominated, ALICE, O::Write, Topic));
        // A longer deny prefix does not dominate a shorter allow.
        let open = set(&[
            acl(Topic, "ab", Prefixed, "User:alice", "*", O::Write, Allow),
            acl(Topic, "abc", Prefixed, "User:alice", "*", O::Write, Deny),
        ]);
        assert!(a.authorize_by_resource_type(&open, ALICE, O::Write, Topic));
        // A wildcard deny refuses outright.
        let mut all_denied = open.clone();
        all_denied.insert(acl(Topic, "*", Literal, "User:*", "*", O::All, Deny));
        assert!(!a.authorize_by_resource_type(&all_denied, ALICE, O::Write, Topic));
        let everything = set(&[acl(Topic, "*", Literal, "User:*", "*", O::All, Allow)]);
        assert!(a.authorize_by_resource_type(&everything, BOB, O::Write, Topic));
    }

    #[test]
    fn authorized_operations_are_the_allowed_supported_operations() {
        let acls = set(&[
            acl(Topic, "t", Literal, "User:alice", "*", O::Read, Allow),
            acl(
                Cluster,
                "kafka-cluster",
                Literal,
                "User:alice",
                "*",
                O::All,
                Allow,
            ),
        ]);
        let bits = |o: &[AclOperation]| o.iter().fold(0, |b, o| b | (1 << o.code()));
        assert_eq!(
            on().authorized_operations(&acls, ALICE, Topic, "t"),
            bits(&[O::Read, O::Describe])
        );
        assert_eq!(on().authorized_operations(&acls, BOB, Topic, "t"), 0);
        assert_eq!(
            on().authorized_operations(&acls, ALICE, Cluster, "kafka-cluster"),
            bits(Cluster.supported_operations())
        );
    }

    #[test]
    fn many_bindings_are_found_by_range_not_confused_by_neighbours() {
        let mut acls = BTreeSet::new();
        for i in 0..1000 {
            acls.insert(acl(
                Topic,
                &format!("t{i}"),
                Literal,
                "User:alice",
                "*",
                O::Read,
                Allow,
            ));
        }
        acls.insert(acl(Topic, "t5", Prefixed, "User:bob", "*", O::Read, Allow));
        assert!(on().authorize(&acls, ALICE, O::Read, Topic, "t999"));
        assert!(!on().authorize(&acls, ALICE, O::Read, Topic, "t1000"));
        assert!(on().authorize(&acls, BOB, O::Read, Topic, "t5000"));
        assert!(!on().authorize(&acls, BOB, O::Read, Topic, "t6"));
    }
}
