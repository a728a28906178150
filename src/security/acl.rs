//! Kafka's ACL model, as plain values: a binding is a resource pattern (resource type, name,
//! pattern type LITERAL or PREFIXED) and an entry (principal, host, operation, permission);
//! a filter selects bindings as Kafka's `AclBindingFilter` does (ANY, MATCH, null = any).
//!
//! The enums carry Kafka's wire codes (`ResourceType`, `PatternType`, `AclOperation`,
//! `AclPermissionType`); a code Kafka does not know reads as `Unknown`, as its `fromCode`
//! does. [`AclBinding::validate`] is what the controller checks before it stores a binding
//! (Kafka's `AclApis.handleCreateAcls` and `AclControlManager.validateNewAcl`);
//! [`AclBindingFilter::validate`] what DeleteAcls checks of a filter.
//!
//! The bindings live in the cluster metadata (`coordinator::metadata`, a `BTreeSet` ordered by
//! resource type, then name, so the authorizer finds a resource's bindings by range, not by a
//! scan). Bounds: at most [`ACLS_MAX`] bindings in a cluster, each string at most
//! [`ACL_FIELD_BYTES_MAX`] bytes, so the whole set stays far inside one metadata snapshot.
//! Pure: no I/O.

use serde::{Deserialize, Serialize};

/// The most ACL bindings a cluster holds (Kafka has no limit; one metadata snapshot must hold
/// them all: 10,000 x 3 strings of at most 1 KiB stay below its 64 MiB).
pub const ACLS_MAX: usize = 10_000;
/// The longest principal, host or resource name an ACL may carry.
pub const ACL_FIELD_BYTES_MAX: usize = 1024;
/// Kafka's wildcard resource name (literal pattern) and host.
pub const WILDCARD: &str = "*";
/// Kafka's wildcard principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The only name of the CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($variant = $code),+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant),+];

            /// The value of a wire code; codes Kafka does not know are `Unknown`.
            pub fn from_code(code: i8) -> $name {
                match code {
                    $($code => $name::$variant,)+
                    _ => $name::Unknown,
                }
            }

            /// The wire code.
            pub fn code(self) -> i8 {
                self as i8
            }

            /// Kafka's name (`toString`), e.g. `PREFIXED`.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value named `text` (case-insensitive; `-` for `_`), as Kafka's `fromString`.
            pub fn parse(text: &str) -> Option<$name> {
                let text = text.to_ascii_uppercase().replace('-', "_");
                Self::ALL_VALUES.iter().copied().find(|v| v.name() == text)
            }
        }
    };
}

kafka_enum!(
    /// Kafka's `ResourceType`.
    ResourceType {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        Topic = 2 => "TOPIC",
        Group = 3 => "GROUP",
        Cluster = 4 => "CLUSTER",
        TransactionalId = 5 => "TRANSACTIONAL_ID",
        DelegationToken = 6 => "DELEGATION_TOKEN",
        User = 7 => "USER",
    }
);

kafka_enum!(
    /// Kafka's `PatternType`.
    PatternType {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        Match = 2 => "MATCH",
        Literal = 3 => "LITERAL",
        Prefixed = 4 => "PREFIXED",
    }
);

kafka_enum!(
    /// Kafka's `AclOperation`.
    AclOperation {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        All = 2 => "ALL",
        Read = 3 => "READ",
        Write = 4 => "WRITE",
        Create = 5 => "CREATE",
        Delete = 6 => "DELETE",
        Alter = 7 => "ALTER",
        Describe = 8 => "DESCRIBE",
        ClusterAction = 9 => "CLUSTER_ACTION",
        DescribeConfigs = 10 => "DESCRIBE_CONFIGS",
        AlterConfigs = 11 => "ALTER_CONFIGS",
        IdempotentWrite = 12 => "IDEMPOTENT_WRITE",
        CreateTokens = 13 => "CREATE_TOKENS",
        DescribeTokens = 14 => "DESCRIBE_TOKENS",
        TwoPhaseCommit = 15 => "TWO_PHASE_COMMIT",
    }
);

kafka_enum!(
    /// Kafka's `AclPermissionType`.
    AclPermission {
        Unknown = 0 => "UNKNOWN",
        Any = 1 => "ANY",
        Deny = 2 => "DENY",
        Allow = 3 => "ALLOW",
    }
);

impl ResourceType {
    /// The operations an ACL on this resource type can grant, as Kafka's
    /// `AclEntry.supportedOperations` (what "authorized operations" report).
    pub fn supported_operations(self) -> &'static [AclOperation] {
        use AclOperation as O;
        match self {
            ResourceType::Topic => &[
                O::Read,
                O::Write,
                O::Create,
                O::Describe,
                O::Delete,
                O::Alter,
                O::DescribeConfigs,
                O::AlterConfigs,
            ],
            ResourceType::Group => &[
                O::Read,
                O::Describe,
                O::Delete,
                O::DescribeConfigs,
                O::AlterConfigs,
            ],
            ResourceType::Cluster => &[
                O::Create,
                O::ClusterAction,
                O::DescribeConfigs,
                O::AlterConfigs,
                O::IdempotentWrite,
                O::Alter,
                O::Describe,
            ],
            ResourceType::TransactionalId => &[O::Describe, O::Write, O::TwoPhaseCommit],
            ResourceType::DelegationToken => &[O::Describe],
            ResourceType::User => &[O::CreateTokens, O::DescribeTokens],
            ResourceType::Unknown | ResourceType::Any => &[],
        }
    }
}

/// One ACL: who (principal, host) may or may not (permission) do what (operation) on which
/// resources (type, name, pattern type). Ordered by resource type, then name: the authorizer
/// looks a resource's bindings up by range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `Type:name`, e.g. `User:alice`; `User:*` is every user.
    pub principal: String,
    /// A client IP address as the broker sees it, or `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// Why a binding or a filter is refused: Kafka answers INVALID_REQUEST with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAcl(pub String);

impl AclBinding {
    /// Checks a binding to be created as Kafka does (the broker's `AclApis.handleCreateAcls`,
    /// then the controller's `AclControlManager.validateNewAcl`), plus this broker's bounds.
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        let invalid = |why: String| Err(InvalidAcl(why));
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return invalid(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if self.resource_name.is_empty() {
            return invalid("Invalid empty resource name".into());
        }
        if matches!(
            self.resource_type,
            ResourceType::Unknown | ResourceType::Any
        ) {
            return invalid(format!(
                "Invalid resourceType {}",
                self.resource_type.name()
            ));
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return invalid(format!("Invalid patternType {}", self.pattern_type.name()));
        }
        if matches!(self.operation, AclOperation::Unknown | AclOperation::Any) {
            return invalid(format!("Invalid operation {}", self.operation.name()));
        }
        if !matches!(self.permission, AclPermission::Allow | AclPermission::Deny) {
            return invalid(format!("Invalid permissionType {}", self.permission.name()));
        }
        if !self.principal.contains(':') {
            return invalid(format!(
                "Could not parse principal from `{}` (no colon is present separating the principal type from the principal name)",
                self.principal
            ));
        }
        for (what, value) in [
            ("resource name", &self.resource_name),
            ("principal", &self.principal),
            ("host", &self.host),
        ] {
            if value.len() > ACL_FIELD_BYTES_MAX {
                return invalid(format!(
                    "The {what} is {} bytes, more than the {ACL_FIELD_BYTES_MAX} this broker accepts",
                    value.len()
                ));
            }
        }
        Ok(())
    }

    /// Whether this binding's pattern covers the resource `(resource_type, name)`: a literal
    /// of that name or the wildcard `*`, or a prefix of the name.
    pub fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
                _ => false,
            }
    }
}

/// Kafka's `AclBindingFilter`: `None` strings match anything; ANY enums match anything; the
/// pattern type MATCH selects every binding that would apply to the named resource (literal,
/// wildcard and prefixed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclBindingFilter {
    /// The filter that matches every binding.
    pub fn any() -> AclBindingFilter {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    /// Refuses a filter with an UNKNOWN element (Kafka's `AclControlManager.validateFilter`,
    /// and `DescribeAclsRequest`'s own check).
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        if self.resource_type == ResourceType::Unknown || self.pattern_type == PatternType::Unknown
        {
            return Err(InvalidAcl("Unknown patternFilter.".into()));
        }
        if self.operation == AclOperation::Unknown || self.permission == AclPermission::Unknown {
            return Err(InvalidAcl("Unknown entryFilter.".into()));
        }
        Ok(())
    }

    /// Kafka's `AclBindingFilter.matches`: the resource pattern filter, then the entry filter.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        self.matches_pattern(acl) && self.matches_entry(acl)
    }

    /// Kafka's `ResourcePatternFilter.matches`.
    fn matches_pattern(&self, acl: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != acl.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != acl.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == acl.pattern_type {
            return *name == acl.resource_name;
        }
        // MATCH: the bindings that apply to the resource `name`.
        match acl.pattern_type {
            PatternType::Literal => *name == acl.resource_name || acl.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(acl.resource_name.as_str()),
            _ => false,
        }
    }

    /// Kafka's `AccessControlEntryFilter.matches`.
    fn matches_entry(&self, acl: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == AclOperation::Any || self.operation == acl.operation)
            && (self.permission == AclPermission::Any || self.permission == acl.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn acl(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        principal: &str,
        op: AclOperation,
        perm: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn topic(name: &str, pt: PatternType) -> AclBinding {
        acl(
            ResourceType::Topic,
            name,
            pt,
            "User:alice",
            AclOperation::Read,
            AclPermission::Allow,
        )
    }

    #[test]
    fn codes_and_names_round_trip_as_kafkas() {
        assert_eq!(ResourceType::from_code(2), ResourceType::Topic);
        assert_eq!(ResourceType::from_code(99), ResourceType::Unknown);
        assert_eq!(AclOperation::IdempotentWrite.code(), 12);
        assert_eq!(
            AclOperation::parse("idempotent-write"),
            Some(AclOperation::IdempotentWrite)
        );
        assert_eq!(PatternType::parse("prefixed"), Some(PatternType::Prefixed));
        assert_eq!(AclPermission::from_code(3), AclPermission::Allow);
        assert_eq!(AclPermission::parse("nope"), None);
        for op in AclOperation::ALL_VALUES {
            assert_eq!(AclOperation::from_code(op.code()), *op);
        }
    }

    #[test]
    fn new_bindings_are_checked_as_kafka_checks_them() {
        let good = topic("t", PatternType::Literal);
        assert_eq!(good.validate(), Ok(()));
        let mut b = good.clone();
        b.resource_type = ResourceType::Cluster;
        assert!(b.validate().unwrap_err().0.contains("kafka-cluster"));
        b.resource_name = CLUSTER_NAME.into();
        assert_eq!(b.validate(), Ok(()));
        let mut b = good.clone();
        b.resource_name.clear();
        assert_eq!(b.validate().unwrap_err().0, "Invalid empty resource name");
        let mut b = good.clone();
        b.resource_type = ResourceType::Any;
        assert_eq!(b.validate().unwrap_err().0, "Invalid resourceType ANY");
        let mut b = good.clone();
        b.pattern_type = PatternType::Match;
        assert_eq!(b.validate().unwrap_err().0, "Invalid patternType MATCH");
        let mut b = good.clone();
        b.operation = AclOperation::Any;
        assert_eq!(b.validate().unwrap_err().0, "Invalid operation ANY");
        let mut b = good.clone();
        b.permission = AclPermission::Unknown;
        assert_eq!(
            b.validate().unwrap_err().0,
            "Invalid permissionType UNKNOWN"
        );
        let mut b = good.clone();
        b.principal = "alice".into();
        assert!(b
            .validate()
            .unwrap_err()
            .0
            .starts_with("Could not parse principal"));
        let mut b = good;
        b.host = "h".repeat(ACL_FIELD_BYTES_MAX + 1);
        assert!(b.validate().is_err());
    }

    #[test]
    fn filters_match_as_kafkas_resource_pattern_filter() {
        let literal = topic("foo", PatternType::Literal);
        let wildcard = topic("*", PatternType::Literal);
        let prefixed = topic("fo", PatternType::Prefixed);
        let other = topic("bar", PatternType::Literal);
        let filter = |name: Option<&str>, pt| AclBindingFilter {
            resource_type: ResourceType::Topic,
            resource_name: name.map(String::from),
            pattern_type: pt,
            ..AclBindingFilter::any()
        };
        let hits = |f: &AclBindingFilter| {
            [&literal, &wildcard, &prefixed, &other]
                .iter()
                .map(|a| f.matches(a))
                .collect::<Vec<_>>()
        };
        assert_eq!(hits(&AclBindingFilter::any()), [true, true, true, true]);
        assert_eq!(
            hits(&filter(Some("foo"), PatternType::Match)),
            [true, true, true, false]
        );
        // ANY with a name: exact names only, whatever the pattern type.
        assert_eq!(
            hits(&filter(Some("fo"), PatternType::Any)),
            [false, false, true, false]
        );
        assert_eq!(
            hits(&filter(Some("foo"), PatternType::Literal)),
            [true, false, false, false]
        );
        assert_eq!(
            hits(&filter(None, PatternType::Prefixed)),
            [false, false, true, false]
        );
        let mut group = AclBindingFilter::any();
        group.resource_type = ResourceType::Group;
        assert_eq!(hits(&group), [false, false, false, false]);
    }

    #[test]
    fn filters_match_entries_with_null_as_any() {
        let a = topic("t", PatternType::Literal);
        let mut f = AclBindingFilter::any();
        f.principal = Some("User:alice".into());
        assert!(f.matches(&a));
        f.principal = Some("User:bob".into());
        assert!(!f.matches(&a));
        let mut f = AclBindingFilter::any();
        f.host = Some("10.0.0.1".into());
        assert!(!f.matches(&a));
        f.host = Some("*".into());
        assert!(f.matches(&a));
        f.operation = AclOperation::Write;
        assert!(!f.matches(&a));
        f.operation = AclOperation::Read;
        f.permission = AclPermission::Deny;
        assert!(!f.matches(&a));
        f.permission = AclPermission::Allow;
        assert!(f.matches(&a));
    }

    #[test]
    fn filters_with_unknown_elements_are_refused() {
        assert_eq!(AclBindingFilter::any().validate(), Ok(()));
        let mut f = AclBindingFilter::any();
        f.pattern_type = PatternType::Unknown;
        assert_eq!(f.validate().unwrap_err().0, "Unknown patternFilter.");
        let mut f = AclBindingFilter::any();
        f.operation = AclOperation::Unknown;
        assert_eq!(f.validate().unwrap_err().0, "Unknown entryFilter.");
    }
}
