//! `freshet cluster info`: cluster id, controller and brokers (DescribeCluster, or Metadata on
//! brokers without it).

use serde_json::json;

use super::{print_json, print_table, ConnArgs, Format, OutputArgs, Result, Session};
use crate::cluster;

/// `freshet cluster ...`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
    /// Where to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// How to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Subcommands of `freshet cluster`.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller and brokers.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Info,
}

/// Runs `freshet cluster ...`.
pub fn run(args: ClusterArgs) -> Result<()> {
    let mut session = Session::connect(&args.conn)?;
    match args.command {
        ClusterCommand::Info => {
            let c = cluster::describe_cluster(session.bootstrap())?;
            match args.output.format {
                Format::Json => print_json(&json!({
                    "cluster_id": c.cluster_id,
                    "controller_id": c.controller_id,
                    "brokers": c.brokers.iter().map(|b| json!({
                        "node_id": b.node_id,
                        "host": b.host,
                        "port": b.port,
                        "rack": b.rack,
                    })).collect::<Vec<_>>(),
                })),
                Format::Table => {
                    print_table(
                        &["CLUSTER-ID", "CONTROLLER"],
                        &[vec![
                            c.cluster_id.clone().unwrap_or_else(|| "-".to_string()),
                            c.controller_id.to_string(),
                        ]],
                    );
                    super::blank_line();
                    print_table(
                        &["ID", "HOST", "PORT", "RACK"],
                        &c.brokers
                            .iter()
                            .map(|b| {
                                let id = if b.node_id == c.controller_id {
                                    format!("{}*", b.node_id)
                                } else {
                                    b.node_id.to_string()
                                };
                                vec![
                                    id,
                                    b.host.clone(),
                                    b.port.to_string(),
                                    b.rack.clone().unwrap_or_else(|| "-".to_string()),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                }
            }
            Ok(())
        }
    }
}
