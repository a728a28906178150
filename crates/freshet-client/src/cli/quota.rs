//! `freshet quota set|remove|list`: client quotas (AlterClientQuotas / DescribeClientQuotas),
//! as `kafka-configs --entity-type users|clients --alter --add-config|--delete-config` and
//! `kafka-configs --describe` do for quotas.
//!
//! An entity is `--user NAME` and/or `--client-id NAME`; `--user-default` /
//! `--client-id-default` name the `<default>` entity of that type. `--ip ADDRESS` /
//! `--ip-default` name an IP entity (KIP-612, as `kafka-configs --entity-type ips`), alone,
//! whose only key is `connection_creation_rate`. `list` without an entity
//! lists every configured entity; with one, the entities that match it (Kafka's EXACT / DEFAULT
//! match types, not strict).

use kafka_protocol::messages::{
    alter_client_quotas_request, describe_client_quotas_request, AlterClientQuotasRequest,
    DescribeClientQuotasRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{print_json, print_table, CliError, ConnArgs, Format, OutputArgs, Result, Session};

/// `freshet quota ...`.
#[derive(clap::Args, Debug)]
pub struct QuotaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: QuotaCommand,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// How to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The entity flags.
#[derive(clap::Args, Debug, Clone)]
pub struct EntityArgs {
    /// A user (the principal's name, e.g. ANONYMOUS).
    #[arg(long, conflicts_with = "user_default")]
    pub user: Option<String>,
    /// The `<default>` user.
    #[arg(long)]
    pub user_default: bool,
    /// A client id.
    #[arg(long, conflicts_with = "client_id_default")]
    pub client_id: Option<String>,
    /// The `<default>` client id.
    #[arg(long)]
    pub client_id_default: bool,
    /// An IP address (its key: connection_creation_rate, new connections per second).
    #[arg(long, conflicts_with_all = ["ip_default", "user", "user_default", "client_id", "client_id_default"])]
    pub ip: Option<String>,
    /// The `<default>` IP (every address without a quota of its own).
    #[arg(long, conflicts_with_all = ["user", "user_default", "client_id", "client_id_default"])]
    pub ip_default: bool,
}

impl EntityArgs {
    /// (entity type, name; `None` = default) for each component given.
    fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        if self.user.is_some() || self.user_default {
            out.push(("user", self.user.clone()));
        }
        if self.client_id.is_some() || self.client_id_default {
            out.push(("client-id", self.client_id.clone()));
        }
        if self.ip.is_some() || self.ip_default {
            out.push(("ip", self.ip.clone()));
        }
        out
    }
}

/// Subcommands of `freshet quota`.
#[derive(clap::Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set quota values: KEY=VALUE (producer_byte_rate, consumer_byte_rate,
    /// request_percentage, controller_mutation_rate; for --ip / --ip-default:
    /// connection_creation_rate).
    #[command(after_help = super::EXIT_CODES_HELP)]
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// KEY=VALUE pairs.
        #[arg(required = true, value_parser = super::parse_key_value)]
        values: Vec<(String, String)>,
    },
    /// Remove quota keys of an entity.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Remove {
        #[command(flatten)]
        entity: EntityArgs,
        /// Keys to remove.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List configured quotas (all, or those of the entities matching the flags).
    #[command(after_help = super::EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        entity: EntityArgs,
    },
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Runs `freshet quota ...`.
pub fn run(args: QuotaArgs) -> Result<()> {
    let mut session = Session::connect(&args.conn)?;
    match args.command {
        QuotaCommand::Set { entity, values } => {
            let mut ops = Vec::new();
            for (key, value) in values {
                let v: f64 = value
                    .parse()
                    .map_err(|_| CliError::Usage(format!("{key}: {value:?} is not a number")))?;
                ops.push((key, Some(v)));
            }
            alter(&mut session, &entity, ops)
        }
        QuotaCommand::Remove { entity, keys } => alter(
            &mut session,
            &entity,
            keys.into_iter().map(|k| (k, None)).collect(),
        ),
        QuotaCommand::List { entity } => list(&mut session, &entity, args.output.format),
    }
}

fn alter(
    session: &mut Session,
    entity: &EntityArgs,
    ops: Vec<(String, Option<f64>)>,
) -> Result<()> {
    let parts = entity.parts();
    if parts.is_empty() {
        return Err(CliError::Usage(
            "name an entity: --user, --user-default, --client-id, --client-id-default, --ip or --ip-default".into(),
        ));
    }
    let entry = alter_client_quotas_request::EntryData::default()
        .with_entity(
            parts
                .iter()
                .map(|(t, n)| {
                    alter_client_quotas_request::EntityData::default()
                        .with_entity_type(s(t))
                        .with_entity_name(n.as_deref().map(s))
                })
                .collect(),
        )
        .with_ops(
            ops.into_iter()
                .map(|(k, v)| {
                    alter_client_quotas_request::OpData::default()
                        .with_key(s(&k))
                        .with_value(v.unwrap_or(0.0))
                        .with_remove(v.is_none())
                })
                .collect(),
        );
    let request = AlterClientQuotasRequest::default().with_entries(vec![entry]);
    let response = session.bootstrap().request(&request)?;
    for e in &response.entries {
        if e.error_code != 0 {
            let message = e.error_message.as_deref().unwrap_or("").to_string();
            return Err(CliError::kafka(
                e.error_code,
                format!("alter client quotas: {message}"),
            ));
        }
    }
    Ok(())
}

fn list(session: &mut Session, entity: &EntityArgs, format: Format) -> Result<()> {
    let components = entity
        .parts()
        .into_iter()
        .map(|(t, n)| {
            describe_client_quotas_request::ComponentData::default()
                .with_entity_type(s(t))
                .with_match_type(if n.is_some() { 0 } else { 1 })
                .with_match(n.as_deref().map(s))
        })
        .collect();
    let request = DescribeClientQuotasRequest::default().with_components(components);
    let response = session.bootstrap().request(&request)?;
    if response.error_code != 0 {
        let message = response.error_message.as_deref().unwrap_or("").to_string();
        return Err(CliError::kafka(
            response.error_code,
            format!("describe client quotas: {message}"),
        ));
    }
    let show = |n: &Option<StrBytes>| n.as_deref().unwrap_or("<default>").to_string();
    let mut rows = Vec::new();
    for e in response.entries.iter().flatten() {
        let part = |t: &str| e.entity.iter().find(|x| x.entity_type.as_str() == t);
        let user = part("user").map(|x| show(&x.entity_name));
        let client = part("client-id").map(|x| show(&x.entity_name));
        let ip = part("ip").map(|x| show(&x.entity_name));
        for v in &e.values {
            rows.push((
                user.clone(),
                client.clone(),
                ip.clone(),
                v.key.to_string(),
                v.value,
            ));
        }
    }
    match format {
        Format::Json => print_json(&json!(rows
            .iter()
            .map(
                |(u, c, i, k, v)| json!({"user": u, "client_id": c, "ip": i, "key": k, "value": v})
            )
            .collect::<Vec<_>>())),
        Format::Table => print_table(
            &["USER", "CLIENT-ID", "IP", "KEY", "VALUE"],
            &rows
                .iter()
                .map(|(u, c, i, k, v)| {
                    vec![
                        u.clone().unwrap_or_else(|| "-".into()),
                        c.clone().unwrap_or_else(|| "-".into()),
                        i.clone().unwrap_or_else(|| "-".into()),
                        k.clone(),
                        v.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}
