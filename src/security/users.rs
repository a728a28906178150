//! The first users, before anyone can log in (Kafka's `kafka-storage format --add-scram`):
//! `freshet user create` writes a user's salted SCRAM credential (never the password) into
//! `<data_dir>/scram-bootstrap.json` of a stopped node; the broker's next start writes each
//! entry to the metadata log (a `SetScramCredential` command, through the active controller)
//! and then removes the file. Refused while a broker holds the data directory's lock.
//!
//! Bounds: the file holds at most [`BOOTSTRAP_USERS_MAX`] entries and is at most
//! [`BOOTSTRAP_FILE_BYTES_MAX`] bytes; a larger or unreadable one is reported and left in place.

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
}

/// `freshet user ...`: users of a stopped node.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Add (or replace) a SCRAM user on a stopped node's data directory; the broker's next
    /// start stores it in the metadata log. PLAIN logins check the same credential.
    Create(CreateArgs),
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

/// Runs `freshet user ...`; the process exit code.
pub fn run(command: UserCommand) -> std::process::ExitCode {
    let UserCommand::Create(args) = command;
    match create(&args) {
        Ok(path) => {
            println!(
                "user {} ({}) added to {}; it is stored in the metadata log when the broker starts",
                args.name,
                args.mechanism,
                path.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("freshet user create: {e}");
            std::process::ExitCode::FAILURE
        }
    }
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
    let lock_path = args.data_dir.join(".lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if !crate::os::try_lock_exclusive(&lock).map_err(|e| e.to_string())? {
        return Err(format!(
            "{} is in use by a running broker: stop it first (or use AlterUserScramCredentials)",
            args.data_dir.display()
        ));
    }
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
