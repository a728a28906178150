//! `freshet group list|describe|delete|seek`.
//!
//! Group requests go to the group's coordinator (FindCoordinator); list asks every broker of
//! the cluster (ListGroups answers only for the groups a broker coordinates). describe joins
//! DescribeGroups (members and their assignments), OffsetFetch (committed offsets) and
//! ListOffsets at the partition leaders (log end offsets) into a lag per partition.
//!
//! seek resets committed offsets as `kafka-consumer-groups --reset-offsets` does: only for an
//! inactive group (Empty, or not existing yet), by an OffsetCommit as a simple consumer
//! (generation -1, empty member id). An active group is refused before anything is written
//! (exit 1, NON_EMPTY_GROUP): its members would overwrite the new offsets anyway.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{print_json, print_table, CliError, ConnArgs, Format, OutputArgs, Result, Session};
use crate::admin::{self, ClusterMetadata};
use crate::groups::{self, GroupDescription};
use crate::Connection;

/// Error code GROUP_ID_NOT_FOUND.
const GROUP_ID_NOT_FOUND: i16 = 69;
/// Error code NON_EMPTY_GROUP.
const NON_EMPTY_GROUP: i16 = 68;

/// `freshet group ...`.
#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: GroupCommand,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// How to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Subcommands of `freshet group`.
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List the groups of every broker.
    #[command(after_help = super::EXIT_CODES_HELP)]
    List,
    /// Describe groups: state, members, committed offsets and lag per partition.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Describe {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete groups (they must have no members).
    #[command(after_help = super::EXIT_CODES_HELP)]
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Reset the committed offsets of an inactive group.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Seek {
        /// Group id.
        group: String,
        /// Where to: `earliest`, `latest`, `offset N` (clamped to the log's range) or
        /// `timestamp MS` (first offset at or after that time; the end when none).
        #[arg(long, num_args = 1..=2, value_names = ["WHERE", "N"], required = true)]
        to: Vec<String>,
        /// Topic to reset, `TOPIC` (all partitions) or `TOPIC:0,2` (repeatable). Default: every
        /// topic the group has committed offsets for.
        #[arg(short, long = "topic")]
        topics: Vec<String>,
        /// Print what would be committed, commit nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where `seek` moves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTarget {
    /// The first offset kept.
    Earliest,
    /// The log end.
    Latest,
    /// An offset, clamped to the log's range.
    Offset(i64),
    /// The first offset at or after a time in ms.
    Timestamp(i64),
}

/// Parses `--to`'s values.
pub fn parse_target(values: &[String]) -> Result<SeekTarget> {
    let number = |v: Option<&String>, what: &str| -> Result<i64> {
        v.ok_or_else(|| CliError::Usage(format!("--to {what} needs a number")))?
            .parse::<i64>()
            .map_err(|_| CliError::Usage(format!("--to {what}: not a number")))
    };
    let target = match values.first().map(String::as_str) {
        Some("earliest" | "start" | "beginning") if values.len() == 1 => SeekTarget::Earliest,
        Some("latest" | "end") if values.len() == 1 => SeekTarget::Latest,
        Some("offset") => SeekTarget::Offset(number(values.get(1), "offset")?),
        Some("timestamp") => SeekTarget::Timestamp(number(values.get(1), "timestamp")?),
        _ => {
            return Err(CliError::Usage(format!(
                "--to {}: expected earliest, latest, offset N or timestamp MS",
                values.join(" ")
            )))
        }
    };
    match target {
        SeekTarget::Offset(n) if n < 0 => Err(CliError::Usage("--to offset: negative".into())),
        SeekTarget::Timestamp(t) if t < 0 => {
            Err(CliError::Usage("--to timestamp: negative".into()))
        }
        t => Ok(t),
    }
}

/// Parses `TOPIC` or `TOPIC:0,2`.
fn parse_topic_spec(spec: &str) -> Result<(String, Option<Vec<i32>>)> {
    match spec.split_once(':') {
        None => Ok((spec.to_string(), None)),
        Some((topic, parts)) => {
            let partitions = parts
                .split(',')
                .map(|p| p.trim().parse::<i32>())
                .collect::<std::result::Result<Vec<i32>, _>>()
                .map_err(|_| CliError::Usage(format!("--topic {spec}: bad partition list")))?;
            Ok((topic.to_string(), Some(partitions)))
        }
    }
}

/// Runs `freshet group ...`.
pub fn run(args: GroupArgs) -> Result<()> {
    let format = args.output.format;
    let mut session = Session::connect(&args.conn)?;
    match args.command {
        GroupCommand::List => list(&mut session, format),
        GroupCommand::Describe { groups } => describe(&mut session, format, &groups),
        GroupCommand::Delete { groups } => delete(&mut session, format, &groups),
        GroupCommand::Seek {
            group,
            to,
            topics,
            dry_run,
        } => {
            let target = parse_target(&to)?;
            let specs = topics
                .iter()
                .map(|s| parse_topic_spec(s))
                .collect::<Result<Vec<_>>>()?;
            seek(&mut session, format, &group, target, &specs, dry_run)
        }
    }
}

/// A connection to `group`'s coordinator.
fn coordinator<'a>(session: &'a mut Session, group: &str) -> Result<&'a mut Connection> {
    let broker = groups::find_coordinator(session.bootstrap(), group)?;
    session.to_addr(&broker.addr())
}

fn list(session: &mut Session, format: Format) -> Result<()> {
    let metadata = admin::metadata(session.bootstrap(), Some(&[]))?;
    let mut all: BTreeMap<String, groups::GroupListing> = BTreeMap::new();
    let addrs: Vec<String> = metadata.brokers.iter().map(|b| b.addr()).collect();
    let addrs = if addrs.is_empty() {
        vec![session.bootstrap().addr().to_string()]
    } else {
        addrs
    };
    for addr in addrs {
        for g in groups::list_groups(session.to_addr(&addr)?)? {
            all.insert(g.group_id.clone(), g);
        }
    }
    match format {
        Format::Json => print_json(&serde_json::Value::Array(
            all.values()
                .map(|g| {
                    json!({
                        "group": g.group_id,
                        "state": g.state,
                        "protocol_type": g.protocol_type,
                    })
                })
                .collect(),
        )),
        Format::Table => print_table(
            &["GROUP", "STATE", "PROTOCOL-TYPE"],
            &all.values()
                .map(|g| vec![g.group_id.clone(), dash(&g.state), dash(&g.protocol_type)])
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// Describes `group` at its coordinator. An unknown group is GROUP_ID_NOT_FOUND, whether the
/// broker says so (DescribeGroups v6+) or answers "Dead" (older versions).
fn describe_one(
    session: &mut Session,
    group: &str,
) -> Result<(GroupDescription, Vec<groups::CommittedOffset>)> {
    let conn = coordinator(session, group)?;
    let description = groups::describe_groups(conn, &[group])?
        .into_iter()
        .find(|g| g.group_id == group)
        .ok_or_else(|| CliError::Io(format!("DescribeGroups: no answer for group {group}")))?;
    if description.error_code != 0 && description.error_code != GROUP_ID_NOT_FOUND {
        return Err(CliError::kafka(
            description.error_code,
            format!("describe group {group}"),
        ));
    }
    let offsets = match groups::offset_fetch(conn, group, None) {
        Ok(o) => o,
        Err(crate::ClientError::Kafka {
            code: GROUP_ID_NOT_FOUND,
            ..
        }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok((description, offsets))
}

fn exists(description: &GroupDescription, offsets: &[groups::CommittedOffset]) -> bool {
    description.error_code != GROUP_ID_NOT_FOUND
        && !(description.state == "Dead" && offsets.is_empty())
}

/// One row of a group's description.
struct LagRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    member: Option<(String, String, String)>,
}

fn describe(session: &mut Session, format: Format, group_ids: &[String]) -> Result<()> {
    let mut documents = Vec::new();
    for (i, group) in group_ids.iter().enumerate() {
        let (mut description, offsets) = describe_one(session, group)?;
        let mut rows = lag_rows(&description, &offsets);
        if !exists(&description, &offsets) {
            // A share group (KIP-932): each share partition's start offset as its position.
            let conn = coordinator(session, group)?;
            if let Some(started) = groups::describe_share_group_offsets(conn, group)? {
                description.state = "-".into();
                description.protocol_type = "share".into();
                description.protocol = "share".into();
                rows = share_rows(started);
                fill_log_ends(session, &mut rows)?;
                let total_lag: i64 = rows.values().filter_map(lag).sum();
                match format {
                    Format::Json => documents.push(describe_json(&description, &rows, total_lag)),
                    Format::Table => print_describe_table(i, &description, &rows, total_lag),
                }
                continue;
            }
            return Err(CliError::kafka(
                GROUP_ID_NOT_FOUND,
                format!("group {group} does not exist"),
            ));
        }
        fill_log_ends(session, &mut rows)?;
        let total_lag: i64 = rows.values().filter_map(lag).sum();
        match format {
            Format::Json => documents.push(describe_json(&description, &rows, total_lag)),
            Format::Table => print_describe_table(i, &description, &rows, total_lag),
        }
    }
    if format == Format::Json {
        print_json(&serde_json::Value::Array(documents));
    }
    Ok(())
}

/// A share group's partitions with their start offsets (the records before it are done; the
/// lag counts the rest, in flight or not yet delivered), without their log ends yet.
fn share_rows(started: Vec<(String, i32, i64)>) -> BTreeMap<(String, i32), LagRow> {
    started
        .into_iter()
        .map(|(topic, partition, start)| {
            let row = LagRow {
                topic: topic.clone(),
                partition,
                committed: (start >= 0).then_some(start),
                log_end: None,
                member: None,
            };
            ((topic, partition), row)
        })
        .collect()
}

/// Every partition with a committed offset or an owner, without its log end yet.
fn lag_rows(
    description: &GroupDescription,
    offsets: &[groups::CommittedOffset],
) -> BTreeMap<(String, i32), LagRow> {
    let mut rows: BTreeMap<(String, i32), LagRow> = BTreeMap::new();
    for o in offsets.iter().filter(|o| o.error_code == 0) {
        rows.insert(
            (o.topic.clone(), o.partition),
            LagRow {
                topic: o.topic.clone(),
                partition: o.partition,
                committed: (o.offset >= 0).then_some(o.offset),
                log_end: None,
                member: None,
            },
        );
    }
    for m in &description.members {
        for (topic, partitions) in &m.assignment {
            for &p in partitions {
                let row = rows.entry((topic.clone(), p)).or_insert_with(|| LagRow {
                    topic: topic.clone(),
                    partition: p,
                    committed: None,
                    log_end: None,
                    member: None,
                });
                row.member = Some((
                    m.member_id.clone(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                ));
            }
        }
    }
    rows
}

/// Each row's log end offset (unknown for a deleted topic).
fn fill_log_ends(session: &mut Session, rows: &mut BTreeMap<(String, i32), LagRow>) -> Result<()> {
    let topics: BTreeSet<String> = rows.keys().map(|(t, _)| t.clone()).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if !names.is_empty() {
        let metadata = admin::metadata(session.bootstrap(), Some(&names))?;
        for topic in &names {
            // A deleted topic keeps its committed offsets; its log end is unknown.
            if metadata.topic(topic).is_none_or(|t| t.error_code != 0) {
                continue;
            }
            let partitions: Vec<i32> = rows
                .keys()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            let ends = session.offsets(&metadata, topic, &partitions, admin::LATEST)?;
            for (p, end) in ends {
                if let Some(row) = rows.get_mut(&(topic.to_string(), p)) {
                    row.log_end = Some(end);
                }
            }
        }
    }
    Ok(())
}

/// A row's lag, when both its committed offset and its log end are known.
fn lag(r: &LagRow) -> Option<i64> {
    match (r.committed, r.log_end) {
        (Some(c), Some(e)) => Some((e - c).max(0)),
        _ => None,
    }
}

/// `group describe --format json`: one group's document.
fn describe_json(
    description: &GroupDescription,
    rows: &BTreeMap<(String, i32), LagRow>,
    total_lag: i64,
) -> serde_json::Value {
    json!({
        "group": description.group_id,
        "state": description.state,
        "protocol_type": description.protocol_type,
        "protocol": description.protocol,
        "members": description.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "group_instance_id": m.group_instance_id,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "assignment": m.assignment.iter().map(|(t, ps)| json!({"topic": t, "partitions": ps})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "total_lag": total_lag,
        "partitions": rows.values().map(|r| json!({
            "topic": r.topic,
            "partition": r.partition,
            "committed_offset": r.committed,
            "log_end_offset": r.log_end,
            "lag": lag(r),
            "member_id": r.member.as_ref().map(|m| &m.0),
            "client_id": r.member.as_ref().map(|m| &m.1),
            "host": r.member.as_ref().map(|m| &m.2),
        })).collect::<Vec<_>>(),
    })
}

/// `group describe` as tables: the group's line, then one line per partition.
fn print_describe_table(
    i: usize,
    description: &GroupDescription,
    rows: &BTreeMap<(String, i32), LagRow>,
    total_lag: i64,
) {
    if i > 0 {
        super::blank_line();
    }
    print_table(
        &["GROUP", "STATE", "PROTOCOL", "MEMBERS", "TOTAL-LAG"],
        &[vec![
            description.group_id.clone(),
            dash(&description.state),
            dash(&description.protocol),
            description.members.len().to_string(),
            total_lag.to_string(),
        ]],
    );
    super::blank_line();
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    print_table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER-ID",
            "CLIENT-ID",
            "HOST",
        ],
        &rows
            .values()
            .map(|r| {
                let (member, client, host) = r
                    .member
                    .clone()
                    .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
                vec![
                    r.topic.clone(),
                    r.partition.to_string(),
                    opt(r.committed),
                    opt(r.log_end),
                    opt(lag(r)),
                    member,
                    client,
                    host,
                ]
            })
            .collect::<Vec<_>>(),
    );
}

fn delete(session: &mut Session, format: Format, group_ids: &[String]) -> Result<()> {
    let mut results: Vec<(String, i16)> = Vec::new();
    for group in group_ids {
        let conn = coordinator(session, group)?;
        let answer = groups::delete_groups(conn, &[group.as_str()])?;
        let code = answer
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, c)| *c)
            .ok_or_else(|| CliError::Io(format!("DeleteGroups: no answer for group {group}")))?;
        results.push((group.clone(), code));
    }
    match format {
        Format::Json => print_json(&serde_json::Value::Array(
            results
                .iter()
                .map(|(g, c)| {
                    json!({
                        "group": g,
                        "error": if *c == 0 { serde_json::Value::Null } else { json!(super::error_name(*c)) },
                    })
                })
                .collect(),
        )),
        Format::Table => print_table(
            &["GROUP", "STATUS"],
            &results
                .iter()
                .map(|(g, c)| {
                    vec![
                        g.clone(),
                        if *c == 0 {
                            "deleted".to_string()
                        } else {
                            super::error_name(*c)
                        },
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    match results.iter().find(|(_, c)| *c != 0) {
        Some((g, c)) => Err(CliError::kafka(*c, format!("delete group {g}"))),
        None => Ok(()),
    }
}

/// The offsets `target` means for `partitions` of `topic`.
fn target_offsets(
    session: &mut Session,
    metadata: &ClusterMetadata,
    topic: &str,
    partitions: &[i32],
    target: SeekTarget,
) -> Result<BTreeMap<i32, i64>> {
    match target {
        SeekTarget::Earliest => session.offsets(metadata, topic, partitions, admin::EARLIEST),
        SeekTarget::Latest => session.offsets(metadata, topic, partitions, admin::LATEST),
        SeekTarget::Offset(n) => {
            let starts = session.offsets(metadata, topic, partitions, admin::EARLIEST)?;
            let ends = session.offsets(metadata, topic, partitions, admin::LATEST)?;
            Ok(partitions
                .iter()
                .map(|p| (*p, n.clamp(starts[p], ends[p].max(starts[p]))))
                .collect())
        }
        SeekTarget::Timestamp(t) => {
            let found = session.offsets(metadata, topic, partitions, t)?;
            let ends = session.offsets(metadata, topic, partitions, admin::LATEST)?;
            // No record at or after `t`: the end, as Kafka's tool does.
            Ok(found
                .into_iter()
                .map(|(p, o)| (p, if o < 0 { ends[&p] } else { o }))
                .collect())
        }
    }
}

fn seek(
    session: &mut Session,
    format: Format,
    group: &str,
    target: SeekTarget,
    specs: &[(String, Option<Vec<i32>>)],
    dry_run: bool,
) -> Result<()> {
    let (description, committed) = describe_one(session, group)?;
    let active = description.error_code != GROUP_ID_NOT_FOUND
        && !matches!(description.state.as_str(), "Empty" | "Dead" | "");
    if active {
        return Err(CliError::kafka(
            NON_EMPTY_GROUP,
            format!(
                "group {group} is active (state {}, {} member(s)); offsets can only be reset \
                 while it has no members: stop its consumers first",
                description.state,
                description.members.len()
            ),
        ));
    }
    let plan = seek_plan(session, group, target, specs, &committed)?;
    let errors = if dry_run {
        BTreeMap::new()
    } else {
        commit_plan(session, group, &plan)?
    };
    let status = |t: &str, p: i32| match errors.get(&(t.to_string(), p)) {
        Some(c) => super::error_name(*c),
        None if dry_run => "dry-run".to_string(),
        None => "committed".to_string(),
    };
    match format {
        Format::Json => print_json(&json!({
            "group": group,
            "dry_run": dry_run,
            "partitions": plan.iter().map(|(t, p, old, new)| json!({
                "topic": t,
                "partition": p,
                "old_offset": old,
                "new_offset": new,
                "status": status(t, *p),
            })).collect::<Vec<_>>(),
        })),
        Format::Table => print_table(
            &["TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET", "STATUS"],
            &plan
                .iter()
                .map(|(t, p, old, new)| {
                    vec![
                        t.clone(),
                        p.to_string(),
                        old.map_or("-".to_string(), |o| o.to_string()),
                        new.to_string(),
                        status(t, *p),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    match errors.iter().next() {
        Some(((t, p), c)) => Err(CliError::kafka(
            *c,
            format!("commit {t}-{p} for group {group}"),
        )),
        None => Ok(()),
    }
}

/// A planned seek: (topic, partition, committed offset, new offset).
type SeekPlan = Vec<(String, i32, Option<i64>, i64)>;

/// The new offset of each partition named by `specs` (default: the topics with committed
/// offsets), next to its committed one.
fn seek_plan(
    session: &mut Session,
    group: &str,
    target: SeekTarget,
    specs: &[(String, Option<Vec<i32>>)],
    committed: &[groups::CommittedOffset],
) -> Result<SeekPlan> {
    let specs: Vec<(String, Option<Vec<i32>>)> = if specs.is_empty() {
        let topics: BTreeSet<String> = committed.iter().map(|c| c.topic.clone()).collect();
        if topics.is_empty() {
            return Err(CliError::Usage(format!(
                "group {group} has no committed offsets: name the topics with --topic"
            )));
        }
        topics.into_iter().map(|t| (t, None)).collect()
    } else {
        specs.to_vec()
    };
    let names: Vec<&str> = specs.iter().map(|(t, _)| t.as_str()).collect();
    let metadata = session.topics_metadata(&names)?;
    let mut plan: SeekPlan = Vec::new();
    for (topic, partitions) in &specs {
        let info = metadata.topic(topic).expect("checked by topics_metadata");
        let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
        let partitions = match partitions {
            Some(ps) => {
                if let Some(p) = ps.iter().find(|p| !all.contains(p)) {
                    return Err(CliError::kafka(3, format!("partition {topic}-{p}")));
                }
                ps.clone()
            }
            None => all,
        };
        let new = target_offsets(session, &metadata, topic, &partitions, target)?;
        for (p, offset) in new {
            let old = committed
                .iter()
                .find(|c| &c.topic == topic && c.partition == p && c.offset >= 0)
                .map(|c| c.offset);
            plan.push((topic.clone(), p, old, offset));
        }
    }
    Ok(plan)
}

/// Commits the plan's new offsets for `group`; returns the partitions refused, with their codes.
fn commit_plan(
    session: &mut Session,
    group: &str,
    plan: &SeekPlan,
) -> Result<BTreeMap<(String, i32), i16>> {
    let mut errors: BTreeMap<(String, i32), i16> = BTreeMap::new();
    let offsets: Vec<(String, i32, i64)> = plan
        .iter()
        .map(|(t, p, _, o)| (t.clone(), *p, *o))
        .collect();
    let conn = coordinator(session, group)?;
    for r in groups::offset_commit(conn, group, &offsets)? {
        if r.error_code != 0 {
            errors.insert((r.topic, r.partition), r.error_code);
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn seek_targets_parse() {
        assert_eq!(
            parse_target(&strings(&["earliest"])).ok(),
            Some(SeekTarget::Earliest)
        );
        assert_eq!(
            parse_target(&strings(&["latest"])).ok(),
            Some(SeekTarget::Latest)
        );
        assert_eq!(
            parse_target(&strings(&["offset", "42"])).ok(),
            Some(SeekTarget::Offset(42))
        );
        assert_eq!(
            parse_target(&strings(&["timestamp", "1700000000000"])).ok(),
            Some(SeekTarget::Timestamp(1_700_000_000_000))
        );
        for bad in [
            &["offset"][..],
            &["offset", "x"],
            &["soon"],
            &["earliest", "3"],
            &["offset", "-1"],
        ] {
            assert!(
                matches!(parse_target(&strings(bad)), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_topic_spec("t:0,2").ok(),
            Some(("t".to_string(), Some(vec![0, 2])))
        );
        assert!(parse_topic_spec("t:x").is_err());
    }
}
