//! `hangar user create|list|delete|set-password` and `hangar team show`:
//! the team's users and dashboard logins.
//!
//! The first dashboard login is made from the CLI with the admin key that
//! `hangar up` / `hangar server` saved on first start:
//! `hangar user create --email me@example.com --role admin --password-stdin`.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, Result, bail};
use hangar_protocol::account::{CreateUserRequest, UpdateUserRequest, UserItem, UserRole};
use std::io::Read;
use std::process::ExitCode;

/// `hangar user …`.
#[derive(Debug, clap::Args)]
pub struct UserCommand {
    #[command(subcommand)]
    sub: UserSub,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Admin,
    Member,
}

impl From<RoleArg> for UserRole {
    fn from(r: RoleArg) -> UserRole {
        match r {
            RoleArg::Admin => UserRole::Admin,
            RoleArg::Member => UserRole::Member,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum UserSub {
    /// Create a user (admins only). With `--password-stdin` they can sign in
    /// to the dashboard right away.
    Create {
        /// Email (the dashboard login).
        #[arg(long)]
        email: String,
        /// Display name (default: the part of the email before `@`).
        #[arg(long)]
        name: Option<String>,
        /// Role in the team.
        #[arg(long, value_enum, default_value = "member")]
        role: RoleArg,
        /// Read the password from standard input (`echo "$PW" | hangar user create … --password-stdin`).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the team's users.
    List,
    /// Delete a user (admins only; not yourself, not the last admin). Their
    /// personal API keys stop working.
    Delete {
        /// User id or email.
        user: String,
    },
    /// Set a user's dashboard password, read from standard input (admins
    /// only). Signs them out everywhere.
    SetPassword {
        /// User id or email.
        user: String,
    },
}

/// `hangar team …`.
#[derive(Debug, clap::Args)]
pub struct TeamCommand {
    #[command(subcommand)]
    sub: TeamSub,
}

#[derive(Debug, clap::Subcommand)]
enum TeamSub {
    /// Show the team of the current credentials.
    Show,
}

/// Reads a password from stdin: the whole input minus one trailing newline.
fn read_password() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the password from standard input")?;
    let password = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text)
        .to_owned();
    if password.is_empty() {
        bail!(
            "standard input is empty: pipe the password in, e.g. `printf '%s' \"$PW\" | hangar user …`"
        );
    }
    Ok(password)
}

/// A user id from an id or an email.
async fn resolve(client: &hangar_client::Client, user: &str) -> Result<String> {
    if !user.contains('@') {
        return Ok(user.to_owned());
    }
    let list = client.list_users().await?;
    list.users
        .into_iter()
        .find(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(user))
        })
        .map(|u| u.id)
        .with_context(|| {
            format!("no user with email `{user}` in your team (see `hangar user list`)")
        })
}

fn role_name(r: UserRole) -> &'static str {
    r.as_str()
}

fn print_users(users: &[UserItem]) {
    println!(
        "{:<36}  {:<32}  {:<24}  {:<7}  STATUS",
        "ID", "EMAIL", "NAME", "ROLE"
    );
    for u in users {
        println!(
            "{:<36}  {:<32}  {:<24}  {:<7}  {}",
            u.id,
            u.email.as_deref().unwrap_or("-"),
            u.display_name,
            role_name(u.role),
            if u.disabled { "disabled" } else { "active" }
        );
    }
}

/// Dispatches `hangar user …`.
pub async fn run(cmd: UserCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    match cmd.sub {
        UserSub::Create {
            email,
            name,
            role,
            password_stdin,
        } => {
            let password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let has_password = password.is_some();
            let user = client
                .create_user(&CreateUserRequest {
                    email,
                    display_name: name,
                    role: Some(role.into()),
                    password: password.map(Into::into),
                })
                .await?;
            match global.output {
                OutputFormat::Pretty => {
                    println!(
                        "Created {} {} ({}).",
                        role_name(user.role),
                        user.email.as_deref().unwrap_or(""),
                        user.id
                    );
                    if has_password {
                        println!(
                            "They can sign in to the dashboard at {}/login.",
                            client.base_url().as_str().trim_end_matches('/')
                        );
                    } else {
                        println!(
                            "Set a password with `hangar user set-password {}` so they can sign in.",
                            user.id
                        );
                    }
                }
                OutputFormat::Text => println!("{}", user.id),
                f => print_json(&user, f),
            }
        }
        UserSub::List => {
            let list = client.list_users().await?;
            match global.output {
                OutputFormat::Pretty => print_users(&list.users),
                OutputFormat::Text => {
                    for u in &list.users {
                        println!("{}", u.id);
                    }
                }
                OutputFormat::Ndjson => {
                    for u in &list.users {
                        print_json(u, OutputFormat::Ndjson);
                    }
                }
                OutputFormat::Json => print_json(&list, OutputFormat::Json),
            }
        }
        UserSub::Delete { user } => {
            let id = resolve(&client, &user).await?;
            client.delete_user(&id).await?;
            match global.output {
                OutputFormat::Pretty => println!("Deleted user {user}."),
                OutputFormat::Text => println!("{id}"),
                f => print_json(&serde_json::json!({"id": id, "deleted": true}), f),
            }
        }
        UserSub::SetPassword { user } => {
            let password = read_password()?;
            let id = resolve(&client, &user).await?;
            let item = client
                .update_user(
                    &id,
                    &UpdateUserRequest {
                        password: Some(password.into()),
                        ..Default::default()
                    },
                )
                .await?;
            match global.output {
                OutputFormat::Pretty => println!(
                    "Password set for {}; their dashboard sessions were ended.",
                    item.email.as_deref().unwrap_or(&item.id)
                ),
                OutputFormat::Text => println!("{}", item.id),
                f => print_json(&item, f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Dispatches `hangar team …`.
pub async fn run_team(cmd: TeamCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    match cmd.sub {
        TeamSub::Show => {
            let teams = client.list_teams().await?;
            match global.output {
                OutputFormat::Pretty => {
                    for t in &teams.teams {
                        println!("Team   {}", t.name);
                        println!("Id     {}", t.id);
                        println!("Users  {}", t.user_count);
                    }
                }
                OutputFormat::Text => {
                    for t in &teams.teams {
                        println!("{}", t.id);
                    }
                }
                f => print_json(&teams, f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
