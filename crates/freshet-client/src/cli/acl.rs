//! `freshet acl add|list|remove`: Kafka's ACLs (CreateAcls, DescribeAcls, DeleteAcls), with
//! flags after `kafka-acls.sh`: a resource (`--topic`, `--group`, `--cluster`,
//! `--transactional-id`) and its `--pattern` (literal, prefixed; for list/remove also any,
//! match), a `--principal` (`User:alice`), a `--host` (`*`), `--operation`s and `--deny`.
//!
//! add fails (exit 1) on the first binding the broker refused; list prints one row per
//! binding; remove prints the bindings it removed. Names of operations and pattern types are
//! Kafka's, case-insensitive (`read`, `IDEMPOTENT_WRITE`, `idempotent-write`).

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{print_json, print_table, CliError, ConnArgs, Format, OutputArgs, Result, Session};

/// Kafka's resource types, pattern types, operations and permissions by wire code.
const RESOURCE_TYPES: &[(i8, &str)] = &[
    (1, "ANY"),
    (2, "TOPIC"),
    (3, "GROUP"),
    (4, "CLUSTER"),
    (5, "TRANSACTIONAL_ID"),
    (6, "DELEGATION_TOKEN"),
    (7, "USER"),
];
const PATTERN_TYPES: &[(i8, &str)] = &[(1, "ANY"), (2, "MATCH"), (3, "LITERAL"), (4, "PREFIXED")];
const OPERATIONS: &[(i8, &str)] = &[
    (1, "ANY"),
    (2, "ALL"),
    (3, "READ"),
    (4, "WRITE"),
    (5, "CREATE"),
    (6, "DELETE"),
    (7, "ALTER"),
    (8, "DESCRIBE"),
    (9, "CLUSTER_ACTION"),
    (10, "DESCRIBE_CONFIGS"),
    (11, "ALTER_CONFIGS"),
    (12, "IDEMPOTENT_WRITE"),
    (13, "CREATE_TOKENS"),
    (14, "DESCRIBE_TOKENS"),
    (15, "TWO_PHASE_COMMIT"),
];
const PERMISSIONS: &[(i8, &str)] = &[(1, "ANY"), (2, "DENY"), (3, "ALLOW")];

fn name_of(table: &[(i8, &str)], code: i8) -> String {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("UNKNOWN({code})"), |(_, n)| n.to_string())
}

fn code_of(table: &[(i8, &str)], what: &str, text: &str) -> Result<i8> {
    let wanted = text.to_ascii_uppercase().replace('-', "_");
    table
        .iter()
        .find(|(_, n)| *n == wanted)
        .map(|(c, _)| *c)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(_, n)| *n).collect();
            CliError::Usage(format!(
                "unknown {what} {text:?} (one of {})",
                names.join(", ")
            ))
        })
}

/// `freshet acl ...`.
#[derive(clap::Args, Debug)]
pub struct AclArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AclCommand,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// How to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The resource and principal flags the subcommands share.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AclSpec {
    /// A topic (with --pattern prefixed: a topic name prefix; `*`: every topic).
    #[arg(long)]
    pub topic: Option<String>,
    /// A consumer group.
    #[arg(long)]
    pub group: Option<String>,
    /// The cluster.
    #[arg(long)]
    pub cluster: bool,
    /// A transactional id.
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// The resource pattern type: literal, prefixed (list and remove: also any, match)
    /// [default: literal for add, any otherwise].
    #[arg(long)]
    pub pattern: Option<String>,
    /// The principal, e.g. User:alice (`User:*`: every user) [add: required].
    #[arg(long)]
    pub principal: Option<String>,
    /// The client host (an IP address, or `*`) [add default: `*`].
    #[arg(long)]
    pub host: Option<String>,
    /// Operations (repeatable): read, write, create, delete, alter, describe, cluster-action,
    /// describe-configs, alter-configs, idempotent-write, all.
    #[arg(long = "operation")]
    pub operations: Vec<String>,
    /// A DENY binding (default: ALLOW).
    #[arg(long)]
    pub deny: bool,
}

/// Subcommands of `freshet acl`.
#[derive(clap::Subcommand, Debug)]
pub enum AclCommand {
    /// Add ACL bindings: one per --operation (CreateAcls).
    #[command(after_help = super::EXIT_CODES_HELP)]
    Add(AclSpec),
    /// List ACL bindings matching the flags given (DescribeAcls).
    #[command(after_help = super::EXIT_CODES_HELP)]
    List(AclSpec),
    /// Remove the ACL bindings matching the flags given (DeleteAcls).
    #[command(after_help = super::EXIT_CODES_HELP)]
    Remove(AclSpec),
}

/// One binding or filter, as codes (`None` strings: any).
#[derive(Debug, Clone, PartialEq)]
struct Binding {
    resource_type: i8,
    resource_name: Option<String>,
    pattern_type: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission: i8,
}

impl AclSpec {
    /// The resource named by the flags: (type, name); ANY when none is given.
    fn resource(&self) -> Result<(i8, Option<String>)> {
        let mut chosen = Vec::new();
        if let Some(t) = &self.topic {
            chosen.push((2, Some(t.clone())));
        }
        if let Some(g) = &self.group {
            chosen.push((3, Some(g.clone())));
        }
        if self.cluster {
            chosen.push((4, Some("kafka-cluster".to_string())));
        }
        if let Some(t) = &self.transactional_id {
            chosen.push((5, Some(t.clone())));
        }
        match chosen.len() {
            0 => Ok((1, None)),
            1 => Ok(chosen.remove(0)),
            _ => Err(CliError::Usage(
                "give one of --topic, --group, --cluster, --transactional-id".into(),
            )),
        }
    }

    /// The bindings to create, one per operation.
    fn bindings(&self) -> Result<Vec<Binding>> {
        let (resource_type, resource_name) = self.resource()?;
        if resource_type == 1 {
            return Err(CliError::Usage(
                "add needs one of --topic, --group, --cluster, --transactional-id".into(),
            ));
        }
        let Some(principal) = self.principal.clone() else {
            return Err(CliError::Usage(
                "add needs --principal (e.g. User:alice)".into(),
            ));
        };
        if self.operations.is_empty() {
            return Err(CliError::Usage("add needs at least one --operation".into()));
        }
        let pattern_type = code_of(
            PATTERN_TYPES,
            "pattern type",
            self.pattern.as_deref().unwrap_or("literal"),
        )?;
        self.operations
            .iter()
            .map(|op| {
                Ok(Binding {
                    resource_type,
                    resource_name: resource_name.clone(),
                    pattern_type,
                    principal: Some(principal.clone()),
                    host: Some(self.host.clone().unwrap_or_else(|| "*".into())),
                    operation: code_of(OPERATIONS, "operation", op)?,
                    permission: if self.deny { 2 } else { 3 },
                })
            })
            .collect()
    }

    /// The filters of list/remove: one per operation (one for any operation).
    fn filters(&self) -> Result<Vec<Binding>> {
        let (resource_type, resource_name) = self.resource()?;
        let pattern_type = code_of(
            PATTERN_TYPES,
            "pattern type",
            self.pattern.as_deref().unwrap_or("any"),
        )?;
        let operations = if self.operations.is_empty() {
            vec![1]
        } else {
            self.operations
                .iter()
                .map(|op| code_of(OPERATIONS, "operation", op))
                .collect::<Result<Vec<_>>>()?
        };
        Ok(operations
            .into_iter()
            .map(|operation| Binding {
                resource_type,
                resource_name: resource_name.clone(),
                pattern_type,
                principal: self.principal.clone(),
                host: self.host.clone(),
                operation,
                permission: if self.deny { 2 } else { 1 },
            })
            .collect())
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Runs `freshet acl ...`.
pub fn run(args: AclArgs) -> Result<()> {
    let format = args.output.format;
    // Usage errors before connecting.
    let work = match &args.command {
        AclCommand::Add(spec) => spec.bindings()?,
        AclCommand::List(spec) | AclCommand::Remove(spec) => spec.filters()?,
    };
    let mut session = Session::connect(&args.conn)?;
    match args.command {
        AclCommand::Add(_) => add(&mut session, format, work),
        AclCommand::List(_) => list(&mut session, format, work),
        AclCommand::Remove(_) => remove(&mut session, format, work),
    }
}

fn add(session: &mut Session, format: Format, bindings: Vec<Binding>) -> Result<()> {
    let creations = bindings
        .iter()
        .map(|b| {
            AclCreation::default()
                .with_resource_type(b.resource_type)
                .with_resource_name(text(b.resource_name.as_deref().unwrap_or_default()))
                .with_resource_pattern_type(b.pattern_type)
                .with_principal(text(b.principal.as_deref().unwrap_or_default()))
                .with_host(text(b.host.as_deref().unwrap_or("*")))
                .with_operation(b.operation)
                .with_permission_type(b.permission)
        })
        .collect();
    let response = session
        .bootstrap()
        .request(&CreateAclsRequest::default().with_creations(creations))?;
    print_bindings(format, &bindings)?;
    for r in &response.results {
        if r.error_code != 0 {
            let message = r.error_message.as_deref().unwrap_or_default().to_string();
            return Err(CliError::kafka(
                r.error_code,
                format!("create acl: {message}"),
            ));
        }
    }
    Ok(())
}

fn list(session: &mut Session, format: Format, filters: Vec<Binding>) -> Result<()> {
    let mut found = Vec::new();
    for f in filters {
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(f.resource_type)
            .with_resource_name_filter(f.resource_name.as_deref().map(text))
            .with_pattern_type_filter(f.pattern_type)
            .with_principal_filter(f.principal.as_deref().map(text))
            .with_host_filter(f.host.as_deref().map(text))
            .with_operation(f.operation)
            .with_permission_type(f.permission);
        let response = session.bootstrap().request(&request)?;
        if response.error_code != 0 {
            let message = response
                .error_message
                .as_deref()
                .unwrap_or_default()
                .to_string();
            return Err(CliError::kafka(
                response.error_code,
                format!("describe acls: {message}"),
            ));
        }
        for r in response.resources {
            for a in r.acls {
                found.push(Binding {
                    resource_type: r.resource_type,
                    resource_name: Some(r.resource_name.to_string()),
                    pattern_type: r.pattern_type,
                    principal: Some(a.principal.to_string()),
                    host: Some(a.host.to_string()),
                    operation: a.operation,
                    permission: a.permission_type,
                });
            }
        }
    }
    print_bindings(format, &found)
}

fn remove(session: &mut Session, format: Format, filters: Vec<Binding>) -> Result<()> {
    let request = DeleteAclsRequest::default().with_filters(
        filters
            .iter()
            .map(|f| {
                DeleteAclsFilter::default()
                    .with_resource_type_filter(f.resource_type)
                    .with_resource_name_filter(f.resource_name.as_deref().map(text))
                    .with_pattern_type_filter(f.pattern_type)
                    .with_principal_filter(f.principal.as_deref().map(text))
                    .with_host_filter(f.host.as_deref().map(text))
                    .with_operation(f.operation)
                    .with_permission_type(f.permission)
            })
            .collect(),
    );
    let response = session.bootstrap().request(&request)?;
    let mut removed = Vec::new();
    for r in response.filter_results {
        if r.error_code != 0 {
            let message = r.error_message.as_deref().unwrap_or_default().to_string();
            return Err(CliError::kafka(
                r.error_code,
                format!("delete acls: {message}"),
            ));
        }
        removed.extend(r.matching_acls.into_iter().map(|a| Binding {
            resource_type: a.resource_type,
            resource_name: Some(a.resource_name.to_string()),
            pattern_type: a.pattern_type,
            principal: Some(a.principal.to_string()),
            host: Some(a.host.to_string()),
            operation: a.operation,
            permission: a.permission_type,
        }));
    }
    print_bindings(format, &removed)
}

fn print_bindings(format: Format, bindings: &[Binding]) -> Result<()> {
    let row = |b: &Binding| {
        [
            name_of(RESOURCE_TYPES, b.resource_type),
            b.resource_name.clone().unwrap_or_default(),
            name_of(PATTERN_TYPES, b.pattern_type),
            b.principal.clone().unwrap_or_default(),
            b.host.clone().unwrap_or_default(),
            name_of(OPERATIONS, b.operation),
            name_of(PERMISSIONS, b.permission),
        ]
    };
    match format {
        Format::Json => {
            print_json(&serde_json::Value::Array(
                bindings
                    .iter()
                    .map(|b| {
                        let [rt, name, pt, principal, host, op, perm] = row(b);
                        json!({"resource_type": rt, "resource_name": name, "pattern_type": pt,
                           "principal": principal, "host": host, "operation": op,
                           "permission": perm})
                    })
                    .collect(),
            ));
            Ok(())
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = bindings.iter().map(|b| row(b).to_vec()).collect();
            print_table(
                &[
                    "RESOURCE",
                    "NAME",
                    "PATTERN",
                    "PRINCIPAL",
                    "HOST",
                    "OPERATION",
                    "PERMISSION",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_makes_one_binding_per_operation_and_checks_its_flags() {
        let spec = AclSpec {
            topic: Some("orders".into()),
            principal: Some("User:alice".into()),
            operations: vec!["read".into(), "idempotent-write".into()],
            ..AclSpec::default()
        };
        let b = spec.bindings().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(
            (
                b[0].resource_type,
                b[0].pattern_type,
                b[0].operation,
                b[0].permission
            ),
            (2, 3, 3, 3)
        );
        assert_eq!(b[1].operation, 12);
        assert_eq!(b[0].host.as_deref(), Some("*"));
        let no_principal = AclSpec {
            principal: None,
            ..spec.clone()
        };
        assert!(matches!(no_principal.bindings(), Err(CliError::Usage(_))));
        let two = AclSpec {
            cluster: true,
            ..spec.clone()
        };
        assert!(matches!(two.resource(), Err(CliError::Usage(_))));
        let bad = AclSpec {
            operations: vec!["fly".into()],
            ..spec
        };
        assert!(matches!(bad.bindings(), Err(CliError::Usage(_))));
    }

    #[test]
    fn list_filters_default_to_any() {
        let f = AclSpec::default().filters().unwrap();
        assert_eq!(
            f,
            vec![Binding {
                resource_type: 1,
                resource_name: None,
                pattern_type: 1,
                principal: None,
                host: None,
                operation: 1,
                permission: 1,
            }]
        );
    }
}
