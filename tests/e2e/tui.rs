//! `gwctl tui` in a real pseudo-terminal (tmux) against a real gatewayd (SPEC §7).
//!
//! The unit tests render screens into ratatui's `TestBackend`; this is the one run through a
//! real terminal: raw mode, the alternate screen, key presses as bytes, and the terminal handed
//! back on `q`. tmux runs on a private server (`-L`), the screen is polled against a deadline
//! (never a fixed sleep), and the server is killed on every way out, a failure included.
//! What the screen claims is checked through the admin API.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gateway_tests::{Gateway, binaries};
use serde_json::json;

use crate::gwctl_store::{
    HOSTILE_GLOB, HOSTILE_GLOB_SHOWN, HOSTILE_NAME, HOSTILE_NAME_SHOWN, is_terminal_control,
    write_store,
};

/// Long enough for a cold debug build's first frame and a 3 s refresh or two.
const DEADLINE: Duration = Duration::from_secs(30);

/// A detached tmux session on its own server, killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let server = format!(
            "gwctl-tui-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Tmux { server };
        let (width, height) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "tui",
            "-x",
            &width,
            "-y",
            &height,
            command,
        ]);
        tmux
    }

    /// `tmux -u -L <server> args…`; `-u` so box drawing and bars come through as UTF-8.
    fn run(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("tmux")
            .args(["-u", "-L", &self.server])
            .args(args)
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap_or_else(|e| panic!("running tmux (is it installed?): {e}"));
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Named keys (`Enter`, `Escape`) or single characters.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Literal text, typed character by character.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "tui", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"])
    }

    /// Polls the screen until `ready` holds; fails with the last screen at the deadline.
    async fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for gwctl to exit (the shell prints `exit=` and then the terminal mode) and
    /// checks it gave the terminal back: `exit=<code>`, the screen from before the dashboard,
    /// canonical mode. Returns the screen.
    async fn wait_for_the_terminal_back(&self, code: u32, context: &str) -> String {
        let screen = self
            .wait_for("gwctl to exit and the terminal mode", |s| {
                s.contains("exit=") && s.lines().any(|l| l.trim().ends_with("icanon"))
            })
            .await;
        assert!(
            screen.contains(&format!("exit={code}")),
            "{context}:\n{screen}"
        );
        assert!(screen.contains("before-tui"), "{context}:\n{screen}");
        assert!(
            screen.lines().any(|l| l.trim() == "icanon"),
            "{context}: canonical mode restored:\n{screen}"
        );
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .output();
    }
}

/// The line of the keys table that shows `name`.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        l.split_whitespace()
            .any(|w| w == name || w == format!("›{name}"))
    })
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[tokio::test]
async fn the_dashboard_lists_creates_revokes_and_gives_the_terminal_back() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    admin
        .create_key(json!({"name": "alpha-live", "spend_limit_usd": 50, "spend_reset": "daily"}))
        .await;
    let (gone_id, _, _) = admin.create_key(json!({"name": "zeta-gone"})).await;
    assert_eq!(
        admin.delete(&format!("/v1/keys/{gone_id}")).await.status,
        200
    );
    // Expires while the dashboard is open: the live refresh has to show the change.
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    admin
        .create_key(json!({"name": "mu-expiring", "expires_at": soon.to_string()}))
        .await;

    let gwctl = binaries::gwctl();
    // The shell around gwctl shows what is left on the terminal after it exits: a marker
    // printed before, the exit code, and whether canonical mode (not raw) is back on.
    let command = format!(
        "echo before-tui; {} --socket {} tui; echo \"exit=$?\"; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; sleep 600",
        shell_quote(gwctl),
        shell_quote(&gateway.socket),
    );
    let tmux = Tmux::start(100, 30, &command);

    // The keys with their states.
    let screen = tmux
        .wait_for("the keys table", |s| {
            row(s, "alpha-live").is_some_and(|r| r.contains("active"))
                && row(s, "zeta-gone").is_some_and(|r| r.contains("revoked"))
        })
        .await;
    assert!(screen.contains("Gateway AI"), "{screen}");
    assert!(
        !screen.contains("before-tui"),
        "on the alternate screen:\n{screen}"
    );
    tmux.wait_for("the expiry to show after a refresh", |s| {
        row(s, "mu-expiring").is_some_and(|r| r.contains("expired"))
    })
    .await;

    // Create: the form, then the secret once.
    tmux.keys(&["c"]);
    tmux.wait_for("the create form", |s| s.contains("Create a key"))
        .await;
    tmux.type_text("ci-runner");
    tmux.keys(&["Enter"]);
    let screen = tmux
        .wait_for("the secret modal", |s| {
            s.contains("only time the secret is shown")
        })
        .await;
    let secret = screen
        .split_whitespace()
        .find(|w| w.starts_with("sk-proxy-") && w.len() == 47)
        .unwrap_or_else(|| panic!("a whole secret on screen:\n{screen}"))
        .to_owned();
    let list = admin.get("/v1/keys").await.body;
    let created = list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "ci-runner")
        .unwrap_or_else(|| panic!("ci-runner was created: {list}"))
        .clone();
    assert_eq!(created["prefix"], secret[..13]);
    assert_eq!(created["state"], "active");
    let created_id = created["id"].as_str().expect("id").to_owned();

    tmux.keys(&["Enter"]);
    let screen = tmux
        .wait_for("the modal to close", |s| {
            !s.contains("only time the secret") && row(s, "ci-runner").is_some()
        })
        .await;
    assert!(!screen.contains(&secret), "the secret is gone:\n{screen}");

    // Revoke the new key (selected after create), with a confirmation that names it.
    tmux.keys(&["r"]);
    tmux.wait_for("the revoke confirmation", |s| {
        s.contains(&format!("Revoke key ci-runner ({created_id})?"))
    })
    .await;
    tmux.keys(&["y"]);
    tmux.wait_for("the key to show as revoked", |s| {
        row(s, "ci-runner").is_some_and(|r| r.contains("revoked"))
    })
    .await;
    let key = admin.get(&format!("/v1/keys/{created_id}")).await;
    assert_eq!(key.body["state"], "revoked", "{}", key.body);
    assert!(!key.body.to_string().contains(&secret));

    // q hands the terminal back: the primary screen, cooked mode, exit 0.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for_the_terminal_back(0, "q").await;
    assert!(
        !screen.contains("Gateway AI"),
        "alternate screen left:\n{screen}"
    );
    assert!(!screen.contains(&secret));
}

/// The process `parent` started whose name is `name`, found through /proc.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces, so split after its last ')'.
            let (head, tail) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent && comm == name).then_some(pid)
        })
}

/// `kill` (SIGTERM: systemd, tmux kill-session, a closing session manager) or a hang-up
/// (SIGHUP: the terminal went away) must not leave the terminal on the alternate screen, in
/// raw mode, with the cursor hidden or reporting the mouse: gwctl restores it and exits as the
/// signal would have.
#[tokio::test]
async fn a_signal_gives_the_terminal_back() {
    let gateway = Gateway::start().await;
    gateway
        .admin()
        .create_key(json!({"name": "alpha-live"}))
        .await;
    let gwctl = binaries::gwctl();
    for (signal, number) in [("TERM", 15), ("HUP", 1), ("INT", 2)] {
        let command = format!(
            "echo before-tui; {} --socket {} tui; echo \"exit=$?\"; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; sleep 600",
            shell_quote(gwctl),
            shell_quote(&gateway.socket),
        );
        let tmux = Tmux::start(100, 30, &command);
        tmux.wait_for("the keys table", |s| row(s, "alpha-live").is_some())
            .await;
        let modes = |tmux: &Tmux| {
            tmux.run(&[
                "display-message",
                "-p",
                "-t",
                "tui",
                "#{alternate_on} #{cursor_flag} #{mouse_any_flag}",
            ])
            .trim()
            .to_owned()
        };
        assert_eq!(
            modes(&tmux),
            "1 0 1",
            "the dashboard: alternate screen, no cursor, mouse reports"
        );
        let shell: u32 = tmux
            .run(&["display-message", "-p", "-t", "tui", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("pane pid");
        let pid = child_named(shell, "gwctl")
            .unwrap_or_else(|| panic!("gwctl runs under the pane's shell {shell}"));
        let killed = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success(), "kill -{signal} {pid}");

        let screen = tmux
            .wait_for_the_terminal_back(128 + number, &format!("SIG{signal}"))
            .await;
        assert!(
            !screen.contains("Gateway AI"),
            "SIG{signal}: alternate screen left:\n{screen}"
        );
        assert_eq!(
            modes(&tmux),
            "0 1 0",
            "SIG{signal}: primary screen, cursor shown, mouse reports off"
        );
    }
}

/// Where `label` is on `screen`, as the 1-based column of its middle and 1-based row that a
/// terminal's SGR mouse report uses.
fn sgr_position(screen: &str, label: &str) -> Option<(usize, usize)> {
    screen.lines().enumerate().find_map(|(y, line)| {
        let at = line.find(label)?;
        let x = line[..at].chars().count() + label.chars().count() / 2;
        Some((x + 1, y + 1))
    })
}

/// The product docs say "go to API Keys and click Create Key". A left click, written into the
/// pane as the SGR report a terminal sends for a press and release on the button, opens the
/// create form; a click on Quit ends gwctl, which turns mouse reporting off again (left on,
/// the shell would receive escape sequences for every click) and leaves the alternate screen.
#[tokio::test]
async fn a_click_on_create_key_opens_the_form_and_quitting_turns_the_mouse_off() {
    let gateway = Gateway::start().await;
    gateway
        .admin()
        .create_key(json!({"name": "alpha-live"}))
        .await;
    let command = format!(
        "echo before-tui; {} --socket {} tui; echo \"exit=$?\"; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; sleep 600",
        shell_quote(binaries::gwctl()),
        shell_quote(&gateway.socket),
    );
    let tmux = Tmux::start(100, 30, &command);
    let screen = tmux
        .wait_for("the keys table", |s| row(s, "alpha-live").is_some())
        .await;
    assert!(screen.contains("API Keys"), "{screen}");
    let modes = |tmux: &Tmux| {
        tmux.run(&[
            "display-message",
            "-p",
            "-t",
            "tui",
            "#{mouse_any_flag} #{mouse_sgr_flag} #{alternate_on}",
        ])
        .trim()
        .to_owned()
    };
    assert_eq!(
        modes(&tmux),
        "1 1 1",
        "the dashboard: mouse reports (SGR), alternate screen"
    );
    let click = |tmux: &Tmux, screen: &str, label: &str| {
        let (x, y) =
            sgr_position(screen, label).unwrap_or_else(|| panic!("{label} on screen:\n{screen}"));
        tmux.type_text(&format!("\x1b[<0;{x};{y}M\x1b[<0;{x};{y}m"));
    };

    click(&tmux, &screen, "[ Create Key ]");
    tmux.wait_for("the create form", |s| s.contains("Create a key"))
        .await;
    // The keyboard still works beside the mouse: Esc cancels the form.
    tmux.keys(&["Escape"]);
    let screen = tmux
        .wait_for("the form to close", |s| {
            !s.contains("Create a key") && row(s, "alpha-live").is_some()
        })
        .await;
    click(&tmux, &screen, "[ Quit ]");
    tmux.wait_for_the_terminal_back(0, "[ Quit ]").await;
    assert_eq!(modes(&tmux), "0 0 0", "mouse reporting off, primary screen");
}

/// Issue #20: a name stored before the daemon refused control characters carries
/// `ESC ]0;pwned BEL` (retitle the terminal), a C1 CSI and a right-to-left override. The
/// dashboard shows it as the rest of gwctl does, escaped and visible (ratatui alone would drop
/// the control characters and show `evil]0;pwned2Jexe.txt`, hiding that anything is wrong),
/// in the table and the detail pane, and the terminal's title is left alone.
#[tokio::test]
async fn issue20_a_stored_control_character_is_shown_escaped_never_sent_raw() {
    let mut gateway = Gateway::start().await;
    let (id, _, _) = gateway
        .admin()
        .create_key(json!({"name": "placeholder"}))
        .await;
    write_store(&mut gateway, |tx| {
        tx.execute(
            "UPDATE keys SET name = ?1, allowed_models = ?2 WHERE id = ?3",
            rusqlite::params![HOSTILE_NAME, json!([HOSTILE_GLOB]).to_string(), id],
        )
        .expect("hostile key");
    })
    .await;
    let command = format!(
        "echo before-tui; {} --socket {} tui; echo \"exit=$?\"; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; sleep 600",
        shell_quote(binaries::gwctl()),
        shell_quote(&gateway.socket),
    );
    // Wide enough for the whole escaped name in the name column.
    let tmux = Tmux::start(160, 30, &command);
    let title = |tmux: &Tmux| tmux.run(&["display-message", "-p", "-t", "tui", "#{pane_title}"]);
    let before = title(&tmux);
    let screen = tmux
        .wait_for("the escaped name in the keys table", |s| {
            s.contains(HOSTILE_NAME_SHOWN)
        })
        .await;
    assert!(
        !screen.chars().any(|c| c != '\n' && is_terminal_control(c)),
        "{}",
        screen.escape_debug()
    );
    tmux.keys(&["Enter"]);
    let screen = tmux
        .wait_for("the detail pane with the escaped glob", |s| {
            s.contains(HOSTILE_GLOB_SHOWN)
        })
        .await;
    assert!(screen.contains(HOSTILE_NAME_SHOWN), "the title:\n{screen}");
    let after = title(&tmux);
    assert!(
        !after.contains("pwned"),
        "the terminal was retitled: {after:?}"
    );
    assert_eq!(before, after);
    // q closes the detail pane, a second q the dashboard.
    tmux.keys(&["q"]);
    tmux.wait_for("the keys table again", |s| s.contains("API Keys"))
        .await;
    tmux.keys(&["q"]);
    tmux.wait_for_the_terminal_back(0, "q").await;
}
