//! `freshet topic create|list|describe|delete|alter-config|elect-leaders|reassign`.
//!
//! create and delete report each topic's result and fail (exit 1) on the first topic the
//! broker refused; describe shows partitions (leader, replicas, ISR, log start and end
//! offsets from the leaders) and configs (DescribeConfigs); alter-config sets and deletes
//! configs with IncrementalAlterConfigs; elect-leaders runs preferred (or unclean) leader
//! elections with ElectLeaders and fails (exit 1) when a partition could not get the leader
//! asked for (ELECTION_NOT_NEEDED, already led as asked, is no failure); reassign moves
//! partitions to other brokers (AlterPartitionReassignments: `--replicas 1,2,3`, or
//! `--cancel`), or lists the reassignments in progress (`--list`,
//! ListPartitionReassignments), and fails (exit 1) on the first partition refused.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    join_ids, parse_key_value, print_json, print_table, CliError, ConnArgs, Format, OutputArgs,
    Result, Session,
};
use crate::admin::{self, NewTopic};
use crate::cluster::{self, AlterOp, ConfigEntry, TopicDescription, RESOURCE_TOPIC};

/// Timeout the broker is given for creating or deleting topics.
const TOPIC_TIMEOUT_MS: i32 = 30_000;

/// `freshet topic ...`.
#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TopicCommand,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// How to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Subcommands of `freshet topic`.
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create topics.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Create {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Partitions (-1: the broker's default).
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor (-1: the broker's default).
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config, key=value (repeatable), e.g. -c retention.ms=3600000.
        #[arg(short = 'c', long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    #[command(after_help = super::EXIT_CODES_HELP)]
    List,
    /// Describe topics: partitions, leaders, offsets, configs.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Describe {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Delete topics.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Delete {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Set or delete topic configs (IncrementalAlterConfigs).
    #[command(after_help = super::EXIT_CODES_HELP)]
    AlterConfig {
        /// Topic name.
        topic: String,
        /// Set key=value (repeatable).
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove a config, back to its default (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
    /// Elect leaders (ElectLeaders): the preferred replica, or any live replica of a
    /// leaderless partition (unclean).
    #[command(after_help = super::EXIT_CODES_HELP)]
    ElectLeaders {
        /// Topic names (none: every partition of every topic).
        topics: Vec<String>,
        /// Only these partitions of the topics (repeatable; default: all of them).
        #[arg(short, long = "partition")]
        partitions: Vec<i32>,
        /// The election: `preferred` or `unclean`.
        #[arg(long = "type", default_value = "preferred", value_parser = ["preferred", "unclean"])]
        election: String,
    },
    /// Move partitions to other brokers (AlterPartitionReassignments), cancel a move, or list
    /// the moves in progress (ListPartitionReassignments). The new replicas catch up from the
    /// leader; the old ones are removed once the new ones are in sync.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Reassign {
        /// Topic name (not with --list).
        #[arg(required_unless_present = "list")]
        topic: Option<String>,
        /// Partitions to reassign (repeatable).
        #[arg(short, long = "partition")]
        partitions: Vec<i32>,
        /// The new replicas, in preference order (the first is the preferred leader), e.g.
        /// `--replicas 1,2,3`.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["cancel", "list"])]
        replicas: Vec<i32>,
        /// Cancel the reassignment in progress of the partitions.
        #[arg(long, conflicts_with = "list")]
        cancel: bool,
        /// List the reassignments in progress.
        #[arg(long)]
        list: bool,
    },
}

/// Runs `freshet topic ...`.
pub fn run(args: TopicArgs) -> Result<()> {
    let format = args.output.format;
    if let TopicCommand::AlterConfig { set, delete, .. } = &args.command {
        if set.is_empty() && delete.is_empty() {
            return Err(CliError::Usage(
                "alter-config needs at least one --set key=value or --delete key".into(),
            ));
        }
    }
    let mut session = Session::connect(&args.conn)?;
    match args.command {
        TopicCommand::Create {
            topics,
            partitions,
            replication_factor,
            configs,
        } => create(
            &mut session,
            format,
            topics,
            partitions,
            replication_factor,
            configs,
        ),
        TopicCommand::List => list(&mut session, format),
        TopicCommand::Describe { topics } => describe(&mut session, format, &topics),
        TopicCommand::Delete { topics } => delete(&mut session, format, &topics),
        TopicCommand::AlterConfig { topic, set, delete } => {
            let mut ops: Vec<AlterOp> = set.into_iter().map(|(k, v)| AlterOp::Set(k, v)).collect();
            ops.extend(delete.into_iter().map(AlterOp::Delete));
            alter_config(&mut session, format, &topic, &ops)
        }
        TopicCommand::ElectLeaders {
            topics,
            partitions,
            election,
        } => elect_leaders(&mut session, format, &topics, &partitions, &election),
        TopicCommand::Reassign {
            topic,
            partitions,
            replicas,
            cancel,
            list,
        } => match topic {
            Some(topic) if !list => {
                reassign(&mut session, format, &topic, &partitions, &replicas, cancel)
            }
            _ => list_reassignments(&mut session, format),
        },
    }
}

fn reassign(
    session: &mut Session,
    format: Format,
    topic: &str,
    partitions: &[i32],
    replicas: &[i32],
    cancel: bool,
) -> Result<()> {
    if partitions.is_empty() || (replicas.is_empty() != cancel) {
        return Err(CliError::Usage(
            "reassign needs --partition and either --replicas 1,2,3 or --cancel".into(),
        ));
    }
    let target = (!cancel).then(|| replicas.to_vec());
    let asked: Vec<(String, i32, Option<Vec<i32>>)> = partitions
        .iter()
        .map(|p| (topic.to_string(), *p, target.clone()))
        .collect();
    let results =
        cluster::alter_partition_reassignments(session.bootstrap(), &asked, TOPIC_TIMEOUT_MS)?;
    let done = if cancel { "cancelled" } else { "started" };
    let status = |r: &cluster::ReassignmentResult| match (r.error_code, &r.error_message) {
        (0, _) => done.to_string(),
        (code, Some(m)) if !m.is_empty() => format!("{}: {m}", super::error_name(code)),
        (code, _) => super::error_name(code),
    };
    match format {
        Format::Json => print_json(&serde_json::Value::Array(
            results
                .iter()
                .map(|r| {
                    json!({
                        "topic": r.topic,
                        "partition": r.partition,
                        "replicas": target,
                        "error": if r.error_code == 0 { serde_json::Value::Null } else { json!(super::error_name(r.error_code)) },
                        "error_message": r.error_message,
                    })
                })
                .collect(),
        )),
        Format::Table => print_table(
            &["TOPIC", "PARTITION", "REPLICAS", "RESULT"],
            &results
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        target.as_deref().map_or("-".into(), join_ids),
                        status(r),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    match results.iter().find(|r| r.error_code != 0) {
        Some(r) => Err(CliError::kafka(
            r.error_code,
            format!("reassign {}-{}", r.topic, r.partition),
        )),
        None => Ok(()),
    }
}

fn list_reassignments(session: &mut Session, format: Format) -> Result<()> {
    let ongoing = cluster::list_partition_reassignments(session.bootstrap(), TOPIC_TIMEOUT_MS)?;
    match format {
        Format::Json => print_json(&serde_json::Value::Array(
            ongoing
                .iter()
                .map(|r| {
                    json!({
                        "topic": r.topic,
                        "partition": r.partition,
                        "replicas": r.replicas,
                        "adding": r.adding,
                        "removing": r.removing,
                    })
                })
                .collect(),
        )),
        Format::Table => print_table(
            &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
            &ongoing
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        join_ids(&r.replicas),
                        join_ids(&r.adding),
                        join_ids(&r.removing),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

fn elect_leaders(
    session: &mut Session,
    format: Format,
    topics: &[String],
    partitions: &[i32],
    election: &str,
) -> Result<()> {
    const ELECTION_NOT_NEEDED: i16 = 84;
    let election_type = if election == "unclean" {
        cluster::ELECTION_UNCLEAN
    } else {
        cluster::ELECTION_PREFERRED
    };
    let asked: Option<Vec<(String, Vec<i32>)>> = if topics.is_empty() {
        if !partitions.is_empty() {
            return Err(CliError::Usage("--partition needs topic names".into()));
        }
        None
    } else if partitions.is_empty() {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let metadata = cluster::describe_topics(session.bootstrap(), Some(&names))?;
        let mut list = Vec::new();
        for name in topics {
            let t = metadata.topics.iter().find(|t| &t.name == name);
            let indexes = match t {
                Some(t) if t.error_code == 0 => t.partitions.iter().map(|p| p.partition).collect(),
                Some(t) => return Err(CliError::kafka(t.error_code, format!("topic {name}"))),
                None => return Err(CliError::kafka(3, format!("topic {name}"))),
            };
            list.push((name.clone(), indexes));
        }
        Some(list)
    } else {
        Some(
            topics
                .iter()
                .map(|t| (t.clone(), partitions.to_vec()))
                .collect(),
        )
    };
    let results = cluster::elect_leaders(
        session.bootstrap(),
        election_type,
        asked.as_deref(),
        TOPIC_TIMEOUT_MS,
    )?;
    let status = |r: &cluster::ElectionResult| match r.error_code {
        0 => "elected".to_string(),
        ELECTION_NOT_NEEDED => "not needed".to_string(),
        code => match &r.error_message {
            Some(m) if !m.is_empty() => format!("{}: {m}", super::error_name(code)),
            _ => super::error_name(code),
        },
    };
    match format {
        Format::Json => print_json(&serde_json::Value::Array(
            results
                .iter()
                .map(|r| {
                    json!({
                        "topic": r.topic,
                        "partition": r.partition,
                        "error": if r.error_code == 0 { serde_json::Value::Null } else { json!(super::error_name(r.error_code)) },
                        "error_message": r.error_message,
                    })
                })
                .collect(),
        )),
        Format::Table => print_table(
            &["TOPIC", "PARTITION", "RESULT"],
            &results
                .iter()
                .map(|r| vec![r.topic.clone(), r.partition.to_string(), status(r)])
                .collect::<Vec<_>>(),
        ),
    }
    match results
        .iter()
        .find(|r| r.error_code != 0 && r.error_code != ELECTION_NOT_NEEDED)
    {
        Some(r) => Err(CliError::kafka(
            r.error_code,
            format!("elect leaders of {}-{}", r.topic, r.partition),
        )),
        None => Ok(()),
    }
}

/// Prints per-topic results; fails with the first error.
fn report_results(
    format: Format,
    verb: &str,
    results: &[admin::TopicResult],
    extra: impl Fn(&str) -> serde_json::Value,
) -> Result<()> {
    match format {
        Format::Json => print_json(&serde_json::Value::Array(
            results
                .iter()
                .map(|r| {
                    let mut v = json!({
                        "topic": r.name,
                        "error": if r.error_code == 0 { serde_json::Value::Null } else { json!(super::error_name(r.error_code)) },
                        "error_message": r.error_message,
                    });
                    if let (Some(obj), serde_json::Value::Object(more)) =
                        (v.as_object_mut(), extra(&r.name))
                    {
                        obj.extend(more);
                    }
                    v
                })
                .collect(),
        )),
        Format::Table => print_table(
            &["TOPIC", "STATUS"],
            &results
                .iter()
                .map(|r| {
                    let status = if r.error_code == 0 {
                        verb.to_string()
                    } else {
                        match &r.error_message {
                            Some(m) if !m.is_empty() => {
                                format!("{}: {m}", super::error_name(r.error_code))
                            }
                            _ => super::error_name(r.error_code),
                        }
                    };
                    vec![r.name.clone(), status]
                })
                .collect::<Vec<_>>(),
        ),
    }
    match results.iter().find(|r| r.error_code != 0) {
        Some(r) => Err(CliError::kafka(
            r.error_code,
            match &r.error_message {
                Some(m) if !m.is_empty() => format!("topic {}: {m}", r.name),
                _ => format!("topic {}", r.name),
            },
        )),
        None => Ok(()),
    }
}

fn create(
    session: &mut Session,
    format: Format,
    topics: Vec<String>,
    partitions: i32,
    replication_factor: i16,
    configs: Vec<(String, String)>,
) -> Result<()> {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            partitions,
            replication_factor,
            configs: configs.clone(),
        })
        .collect();
    let results = admin::create_topics(session.bootstrap(), &new, TOPIC_TIMEOUT_MS)?;
    report_results(
        format,
        "created",
        &results,
        |_| json!({ "partitions": partitions, "replication_factor": replication_factor }),
    )
}

fn delete(session: &mut Session, format: Format, topics: &[String]) -> Result<()> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = admin::delete_topics(session.bootstrap(), &names, TOPIC_TIMEOUT_MS)?;
    report_results(format, "deleted", &results, |_| json!({}))
}

fn list(session: &mut Session, format: Format) -> Result<()> {
    let metadata = cluster::describe_topics(session.bootstrap(), None)?;
    let topics: Vec<_> = metadata
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .collect();
    match format {
        Format::Json => print_json(&serde_json::Value::Array(
            topics
                .iter()
                .map(|t| {
                    json!({
                        "topic": t.name,
                        "partitions": t.partitions.len(),
                        "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                        "internal": t.is_internal,
                    })
                })
                .collect(),
        )),
        Format::Table => print_table(
            &["NAME", "PARTITIONS", "REPLICAS"],
            &topics
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.partitions.len().to_string(),
                        t.partitions
                            .first()
                            .map_or(0, |p| p.replicas.len())
                            .to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

fn describe(session: &mut Session, format: Format, topics: &[String]) -> Result<()> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let full = cluster::describe_topics(session.bootstrap(), Some(&names))?;
    let metadata = session.topics_metadata(&names)?;
    let mut documents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let t = full
            .topics
            .iter()
            .find(|t| t.name == *name)
            .ok_or_else(|| CliError::kafka(3, format!("topic {name}")))?;
        if t.error_code != 0 {
            return Err(CliError::kafka(t.error_code, format!("topic {name}")));
        }
        let indexes: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
        let starts = session.offsets(&metadata, name, &indexes, admin::EARLIEST)?;
        let ends = session.offsets(&metadata, name, &indexes, admin::LATEST)?;
        let configs = cluster::describe_configs(session.bootstrap(), RESOURCE_TOPIC, name)?;
        let replication = t.partitions.first().map_or(0, |p| p.replicas.len());
        match format {
            Format::Json => documents.push(topic_json(t, &starts, &ends, &configs)),
            Format::Table => print_topic_tables(i, t, replication, &starts, &ends, &configs),
        }
    }
    if format == Format::Json {
        print_json(&serde_json::Value::Array(documents));
    }
    Ok(())
}

/// `topic describe --format json`: one topic's document.
fn topic_json(
    t: &TopicDescription,
    starts: &BTreeMap<i32, i64>,
    ends: &BTreeMap<i32, i64>,
    configs: &[ConfigEntry],
) -> serde_json::Value {
    json!({
        "topic": t.name,
        "topic_id": t.topic_id.to_string(),
        "internal": t.is_internal,
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": p.leader,
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
            "log_start_offset": starts.get(&p.partition),
            "high_watermark": ends.get(&p.partition),
        })).collect::<Vec<_>>(),
        "configs": configs.iter().map(|c| json!({
            "name": c.name,
            "value": c.value,
            "source": c.source,
            "read_only": c.read_only,
            "sensitive": c.is_sensitive,
        })).collect::<Vec<_>>(),
    })
}

/// `topic describe` as tables: the topic, its partitions, its configs.
fn print_topic_tables(
    i: usize,
    t: &TopicDescription,
    replication: usize,
    starts: &BTreeMap<i32, i64>,
    ends: &BTreeMap<i32, i64>,
    configs: &[ConfigEntry],
) {
    if i > 0 {
        super::blank_line();
    }
    print_table(
        &["TOPIC", "ID", "PARTITIONS", "REPLICAS"],
        &[vec![
            t.name.clone(),
            t.topic_id.to_string(),
            t.partitions.len().to_string(),
            replication.to_string(),
        ]],
    );
    super::blank_line();
    print_table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG-START-OFFSET",
            "HIGH-WATERMARK",
        ],
        &t.partitions
            .iter()
            .map(|p| {
                let offset = |m: &BTreeMap<i32, i64>| {
                    m.get(&p.partition).map_or("-".to_string(), i64::to_string)
                };
                vec![
                    p.partition.to_string(),
                    p.leader.to_string(),
                    p.leader_epoch.to_string(),
                    join_ids(&p.replicas),
                    join_ids(&p.isr),
                    offset(starts),
                    offset(ends),
                ]
            })
            .collect::<Vec<_>>(),
    );
    super::blank_line();
    print_table(
        &["CONFIG", "VALUE", "SOURCE"],
        &configs
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    if c.is_sensitive {
                        "(sensitive)".to_string()
                    } else {
                        c.value.clone().unwrap_or_else(|| "-".to_string())
                    },
                    c.source.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

fn alter_config(session: &mut Session, format: Format, topic: &str, ops: &[AlterOp]) -> Result<()> {
    cluster::alter_configs(session.bootstrap(), RESOURCE_TOPIC, topic, ops)?;
    match format {
        Format::Json => print_json(&json!({
            "topic": topic,
            "set": ops.iter().filter_map(|op| match op {
                AlterOp::Set(k, v) => Some((k.clone(), json!(v))),
                AlterOp::Delete(_) => None,
            }).collect::<serde_json::Map<_, _>>(),
            "deleted": ops.iter().filter_map(|op| match op {
                AlterOp::Delete(k) => Some(k.clone()),
                AlterOp::Set(..) => None,
            }).collect::<Vec<_>>(),
        })),
        Format::Table => print_table(
            &["TOPIC", "CONFIG", "CHANGE"],
            &ops.iter()
                .map(|op| match op {
                    AlterOp::Set(k, v) => vec![topic.to_string(), k.clone(), format!("set to {v}")],
                    AlterOp::Delete(k) => vec![topic.to_string(), k.clone(), "deleted".to_string()],
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}
