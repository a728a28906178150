//! The users of a stopped node, before anyone can log in (Kafka's `kafka-storage format
//! --add-scram`): `freshet user create` writes a user's salted SCRAM credential (never the
//! password) into `<data_dir>/scram-bootstrap.json` of a stopped node; `freshet user delete`
//! drops a pending one from it and records the deletion of a stored one; the broker's next
//! start writes each entry to the metadata log (`SetScramCredential` / `DeleteScramCredential`
//! commands, through the active controller) and then removes the file. `freshet user list`
//! shows the users stored in the node's metadata log (read offline by the caller's
//! [`StoredUsers`]) and those pending in the file: name, mechanism, iterations, never salts
//! or keys. All three are refused while a broker holds the data directory's lock.
//!
//! Bounds: the file holds at most [`BOOTSTRAP_USERS_MAX`] entries and is at most
//! [`BOOTSTRAP_FILE_BYTES_MAX`] bytes; a larger or unreadable one is reported and left in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scram::{ScramCredential, ScramMechanism, ITERATIONS_MAX, ITERATIONS_MIN};

/// The bootstrap file's name in the data directory.
pub const BOOTSTRAP_FILE: &str = "scram-bootstrap.json";
/// The most users one bootstrap file holds.
pub const BOOTSTRAP_USERS_MAX: usize = 1000;
/// The largest bootstrap file read.
pub const BOOTSTRAP_FILE_BYTES_MAX: u64 = 4 << 20;

/// One user's credential waiting to be written to the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapUser {
    pub user: String,
    pub mechanism: String,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
    /// A deletion (`freshet user delete` of a stored credential): the key fields are empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// The users a node's metadata log holds: user -> mechanism -> iterations. Given by the
/// caller (the binary reads the metadata offline; this module imports nothing of the broker).
pub type StoredUsers<'a> =
    &'a dyn Fn(&Path) -> Result<BTreeMap<String, BTreeMap<String, i32>>, String>;

/// `freshet user ...`: users of a stopped node.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Add (or replace) a SCRAM user on a stopped node's data directory; the broker's next
    /// start stores it in the metadata log. PLAIN logins check the same credential.
    Create(CreateArgs),
    /// List the users of a stopped node: stored in its metadata log, and pending (created or
    /// deleted for its next start). Shows mechanisms and iterations, never salts or keys.
    List(ListArgs),
    /// Delete a user's SCRAM credential (one mechanism, or all of them) on a stopped node's
    /// data directory; the broker's next start removes it from the metadata log.
    Delete(DeleteArgs),
}

/// The flags of `freshet user list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// The node's data directory (the broker must be stopped).
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// The flags of `freshet user delete`.
#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The node's data directory (the broker must be stopped).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The user name.
    #[arg(long)]
    pub name: String,
    /// Only this mechanism's credential [default: every mechanism of the user].
    #[arg(long, value_parser = ["SCRAM-SHA-256", "SCRAM-SHA-512"])]
    pub mechanism: Option<String>,
}

/// The flags of `freshet user create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// The node's data directory (the broker must be stopped).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The user name (the principal is User:NAME).
    #[arg(long)]
    pub name: String,
    /// The password (or --password-file).
    #[arg(long, conflicts_with = "password_file")]
    pub password: Option<String>,
    /// A file whose first line is the password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// SCRAM-SHA-256 or SCRAM-SHA-512 (repeat the command for both).
    #[arg(long, default_value = "SCRAM-SHA-512", value_parser = ["SCRAM-SHA-256", "SCRAM-SHA-512"])]
    pub mechanism: String,
    /// PBKDF2 iterations, 4096..=16384.
    #[arg(long, default_value_t = ITERATIONS_MIN)]
    pub iterations: i32,
}

/// Runs `freshet user ...`; the process exit code. `stored` reads the users of a data
/// directory's metadata log.
pub fn run(command: UserCommand, stored: StoredUsers) -> std::process::ExitCode {
    let (name, result) = match command {
        UserCommand::Create(args) => (
            "create",
            create(&args).map(|path| {
                format!(
                    "user {} ({}) added to {}; it is stored in the metadata log when the broker starts",
                    args.name,
                    args.mechanism,
                    path.display()
                )
            }),
        ),
        UserCommand::List(args) => ("list", list(&args.data_dir, stored).map(|t| render(&t))),
        UserCommand::Delete(args) => ("delete", delete(&args, stored)),
    };
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("freshet user {name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Takes the data directory's lock (held until the file is dropped), or says that a broker
/// runs there.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, String> {
    let lock_path = data_dir.join(".lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if !crate::os::try_lock_exclusive(&lock).map_err(|e| e.to_string())? {
        return Err(format!(
            "{} is in use by a running broker: stop it first (or use AlterUserScramCredentials)",
            data_dir.display()
        ));
    }
    Ok(lock)
}

/// One row of `freshet user list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub user: String,
    pub mechanism: String,
    pub iterations: i32,
    /// `stored`, `pending` (stored at the next start) or `deleted at the next start`.
    pub state: &'static str,
}

/// The rows of `freshet user list`: the stored users with what the bootstrap file will do to
/// them at the next start, sorted by user and mechanism.
fn list(data_dir: &Path, stored: StoredUsers) -> Result<Vec<UserRow>, String> {
    if !data_dir.is_dir() {
        return Err(format!("{}: not a directory", data_dir.display()));
    }
    let _lock = lock_data_dir(data_dir)?;
    Ok(rows(&stored(data_dir)?, &read_bootstrap(data_dir)?))
}

/// The stored users overlaid with the pending entries (pure).
fn rows(
    stored: &BTreeMap<String, BTreeMap<String, i32>>,
    pending: &[BootstrapUser],
) -> Vec<UserRow> {
    let mut rows: BTreeMap<(String, String), (i32, &'static str)> = stored
        .iter()
        .flat_map(|(user, m)| {
            m.iter()
                .map(move |(mech, it)| ((user.clone(), mech.clone()), (*it, "stored")))
        })
        .collect();
    for p in pending {
        let key = (p.user.clone(), p.mechanism.clone());
        if p.delete {
            if let Some(row) = rows.get_mut(&key) {
                row.1 = "deleted at the next start";
            }
        } else {
            rows.insert(key, (p.iterations, "pending (stored at the next start)"));
        }
    }
    rows.into_iter()
        .map(|((user, mechanism), (iterations, state))| UserRow {
            user,
            mechanism,
            iterations,
            state,
        })
        .collect()
}

/// The table `freshet user list` prints.
fn render(rows: &[UserRow]) -> String {
    if rows.is_empty() {
        return "no users".into();
    }
    let width = rows.iter().map(|r| r.user.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:width$}  MECHANISM      ITERATIONS  STATE\n", "USER");
    for r in rows {
        out.push_str(&format!(
            "{:width$}  {:13}  {:10}  {}\n",
            r.user, r.mechanism, r.iterations, r.state
        ));
    }
    out
}

/// `freshet user delete`: pending creations of the user (that mechanism, or all) leave the
/// bootstrap file; stored credentials get a deletion entry for the next start.
fn delete(args: &DeleteArgs, stored: StoredUsers) -> Result<String, String> {
    if !args.data_dir.is_dir() {
        return Err(format!("{}: not a directory", args.data_dir.display()));
    }
    let _lock = lock_data_dir(&args.data_dir)?;
    let stored = stored(&args.data_dir)?;
    let pending = read_bootstrap(&args.data_dir)?;
    let (next, what) = plan_delete(&stored, pending, &args.name, args.mechanism.as_deref())?;
    write_bootstrap(&args.data_dir, &next)?;
    Ok(format!(
        "user {} ({}) deleted in {}; the broker removes it from the metadata log when it starts",
        args.name,
        what.join(", "),
        args.data_dir.display()
    ))
}

/// The bootstrap entries after deleting `user` (`mechanism`, or every one), and the
/// mechanisms deleted; an error when there is nothing to delete (pure).
fn plan_delete(
    stored: &BTreeMap<String, BTreeMap<String, i32>>,
    mut pending: Vec<BootstrapUser>,
    user: &str,
    mechanism: Option<&str>,
) -> Result<(Vec<BootstrapUser>, Vec<String>), String> {
    let matches = |m: &str| mechanism.is_none_or(|want| want == m);
    let mut deleted: Vec<String> = pending
        .iter()
        .filter(|p| p.user == user && !p.delete && matches(&p.mechanism))
        .map(|p| p.mechanism.clone())
        .collect();
    pending.retain(|p| !(p.user == user && matches(&p.mechanism)));
    for mech in stored.get(user).into_iter().flat_map(|m| m.keys()) {
        if matches(mech) {
            pending.push(BootstrapUser {
                user: user.to_string(),
                mechanism: mech.clone(),
                salt: Vec::new(),
                stored_key: Vec::new(),
                server_key: Vec::new(),
                iterations: 0,
                delete: true,
            });
            deleted.push(mech.clone());
        }
    }
    if deleted.is_empty() {
        return Err(format!(
            "no user {user}{} on this node",
            mechanism.map(|m| format!(" with {m}")).unwrap_or_default()
        ));
    }
    if pending.len() > BOOTSTRAP_USERS_MAX {
        return Err(format!(
            "at most {BOOTSTRAP_USERS_MAX} users per bootstrap file"
        ));
    }
    deleted.sort();
    deleted.dedup();
    Ok((pending, deleted))
}

fn create(args: &CreateArgs) -> Result<PathBuf, String> {
    let password = match (&args.password, &args.password_file) {
        (Some(p), _) => p.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        (None, None) => return Err("give --password or --password-file".into()),
    };
    if password.is_empty() || args.name.is_empty() {
        return Err("the user name and password must not be empty".into());
    }
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&args.iterations) {
        return Err(format!(
            "--iterations must be in {ITERATIONS_MIN}..={ITERATIONS_MAX}"
        ));
    }
    let mechanism = ScramMechanism::from_name(&args.mechanism)
        .ok_or_else(|| format!("unknown mechanism {}", args.mechanism))?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let _lock = lock_data_dir(&args.data_dir)?;
    let credential = ScramCredential::new(mechanism, &password, args.iterations);
    let mut users = read_bootstrap(&args.data_dir)?;
    users.retain(|u| !(u.user == args.name && u.mechanism == args.mechanism));
    if users.len() >= BOOTSTRAP_USERS_MAX {
        return Err(format!(
            "at most {BOOTSTRAP_USERS_MAX} users per bootstrap file"
        ));
    }
    users.push(BootstrapUser {
        user: args.name.clone(),
        mechanism: args.mechanism.clone(),
        salt: credential.salt,
        stored_key: credential.stored_key,
        server_key: credential.server_key,
        iterations: credential.iterations,
        delete: false,
    });
    write_bootstrap(&args.data_dir, &users)
}

/// The users waiting in `data_dir`'s bootstrap file (none without one).
pub fn read_bootstrap(data_dir: &Path) -> Result<Vec<BootstrapUser>, String> {
    let path = data_dir.join(BOOTSTRAP_FILE);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if size > BOOTSTRAP_FILE_BYTES_MAX {
        return Err(format!(
            "{}: larger than {BOOTSTRAP_FILE_BYTES_MAX} bytes",
            path.display()
        ));
    }
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let users: Vec<BootstrapUser> =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if users.len() > BOOTSTRAP_USERS_MAX {
        return Err(format!(
            "{}: more than {BOOTSTRAP_USERS_MAX} users",
            path.display()
        ));
    }
    Ok(users)
}

/// Writes the bootstrap file whole (a temporary file renamed over it), readable by its owner
/// only.
fn write_bootstrap(data_dir: &Path, users: &[BootstrapUser]) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(BOOTSTRAP_FILE);
    let tmp = data_dir.join(format!("{BOOTSTRAP_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(users).map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Removes the bootstrap file once its users are in the metadata log.
pub fn remove_bootstrap(data_dir: &Path) -> std::io::Result<()> {
    std::fs::remove_file(data_dir.join(BOOTSTRAP_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(user: &str, mechanism: &str, delete: bool) -> BootstrapUser {
        BootstrapUser {
            user: user.into(),
            mechanism: mechanism.into(),
            salt: vec![1],
            stored_key: vec![2],
            server_key: vec![3],
            iterations: 8192,
            delete,
        }
    }

    fn stored() -> BTreeMap<String, BTreeMap<String, i32>> {
        let mut s = BTreeMap::new();
        s.entry("alice".to_string())
            .or_insert_with(BTreeMap::new)
            .extend([
                ("SCRAM-SHA-256".to_string(), 4096),
                ("SCRAM-SHA-512".to_string(), 4096),
            ]);
        s
    }

    /// Deleting one mechanism or all: pending creations leave the file, stored credentials get
    /// deletion entries; nothing to delete is an error.
    #[test]
    fn delete_plans_pending_and_stored_credentials() {
        let file = vec![
            pending("bob", "SCRAM-SHA-512", false),
            pending("alice", "SCRAM-SHA-512", false),
        ];
        let (next, what) = plan_delete(&stored(), file.clone(), "bob", None).unwrap();
        assert_eq!((next.len(), what), (1, vec!["SCRAM-SHA-512".to_string()]));
        let (next, what) =
            plan_delete(&stored(), file.clone(), "alice", Some("SCRAM-SHA-256")).unwrap();
        assert_eq!(what, ["SCRAM-SHA-256"]);
        assert_eq!(next.len(), 3);
        assert!(next[2].delete && next[2].stored_key.is_empty());
        let (next, what) = plan_delete(&stored(), file.clone(), "alice", None).unwrap();
        assert_eq!(what, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);
        assert_eq!(next.iter().filter(|p| p.delete).count(), 2);
        assert_eq!(next.iter().filter(|p| p.user == "bob").count(), 1);
        assert!(plan_delete(&stored(), file.clone(), "carol", None).is_err());
        assert!(plan_delete(&BTreeMap::new(), file, "bob", Some("SCRAM-SHA-256")).is_err());
    }

    /// The listing overlays the file on the stored users and shows no key material.
    #[test]
    fn list_overlays_pending_entries_and_shows_no_keys() {
        let file = vec![
            pending("alice", "SCRAM-SHA-256", true),
            pending("bob", "SCRAM-SHA-512", false),
        ];
        let rows = rows(&stored(), &file);
        let states: Vec<_> = rows
            .iter()
            .map(|r| (r.user.as_str(), r.mechanism.as_str(), r.iterations, r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("alice", "SCRAM-SHA-256", 4096, "deleted at the next start"),
                ("alice", "SCRAM-SHA-512", 4096, "stored"),
                (
                    "bob",
                    "SCRAM-SHA-512",
                    8192,
                    "pending (stored at the next start)"
                ),
            ]
        );
        let text = render(&rows);
        assert!(text.starts_with("USER "), "{text}");
        assert_eq!(render(&[]), "no users");
        // An old file (no `delete` field) still reads; a creation writes no `delete` field.
        let json = serde_json::to_string(&pending("x", "SCRAM-SHA-256", false)).unwrap();
        assert!(!json.contains("delete"));
        let back: BootstrapUser = serde_json::from_str(&json).unwrap();
        assert!(!back.delete);
    }
}
