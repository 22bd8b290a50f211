//! `krisbud templates ...` as a person at a terminal would use it, against the
//! whole system running in this process on a real nats-server: list, show, draft
//! from a file, preview, submit, diff, four eyes, approve, reject, retire, export,
//! import.

use std::path::Path;
use std::process::Output;

use krisbud::config::Config;
use krisbud::demo::DemoTokens;
use krisbud::system::{self, UpOptions};
use krisbud_kit::CancellationToken;
use krisbud_proto::Role;

const KRISBUD: &str = env!("CARGO_BIN_EXE_krisbud");

async fn cli(api: &str, token: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(KRISBUD)
        .args(args)
        .env("KRISBUD_API", api)
        .env("KRISBUD_TOKEN", token)
        // The person's language, as a Swedish locale would set it.
        .env("KRISBUD_LANG", "sv")
        .output()
        .await
        .expect("the CLI runs")
}

/// Runs the CLI and returns its standard output, asserting success.
async fn ok(api: &str, token: &str, args: &[&str]) -> String {
    let out = cli(api, token, args).await;
    assert!(
        out.status.success(),
        "krisbud {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the CLI and returns its standard error, asserting failure.
async fn fails(api: &str, token: &str, args: &[&str]) -> String {
    let out = cli(api, token, args).await;
    assert!(
        !out.status.success(),
        "krisbud {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The whole system with the demo set, in this process, on its own nats-server
/// and data directory.
struct Running {
    api: String,
    tokens: DemoTokens,
    data: tempfile::TempDir,
    shutdown: CancellationToken,
    system: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start() -> Running {
        krisbud_tests::init_test_log();
        let data = tempfile::tempdir().unwrap();
        let config = Config::from_toml(&format!(
            r#"
data_dir = "{dir}"
[privacy]
recipient_key = "cli-test"
[gateway]
listen = "127.0.0.1:0"
[banner]
listen = "127.0.0.1:0"
"#,
            dir = data.path().display(),
        ))
        .unwrap();
        let shutdown = CancellationToken::new();
        let running = system::up(config, UpOptions { demo: true }, shutdown.clone())
            .await
            .expect("the system starts");
        let api = format!("http://{}", running.api);
        let tokens = running.demo_tokens.clone().unwrap();
        let system = tokio::spawn(running.wait());
        Running {
            api,
            tokens,
            data,
            shutdown,
            system,
        }
    }

    fn token(&self, role: Role) -> String {
        self.tokens.token_for(role).to_owned()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.system.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_lifecycle_from_the_command_line() {
    let running = Running::start().await;
    let data = &running.data;
    let duty = running.token(Role::DutyOfficer);
    let editor = running.token(Role::TemplateEditor);
    let approver = running.token(Role::TemplateApprover);
    let admin = running.token(Role::Admin);
    let api = running.api.as_str();

    // The duty officer's list, then every version.
    let listed = ok(api, &duty, &["templates"]).await;
    for id in [
        "vattenlacka",
        "varmebolja",
        "it-storning",
        "evakuering-aldreboende",
    ] {
        assert!(listed.contains(id), "{listed}");
    }
    assert!(listed.contains("--var datum="), "{listed}");
    let all = ok(api, &editor, &["templates", "list", "--all"]).await;
    assert!(all.contains("godkänd"), "{all}");

    // The editor takes version 1 as a file, changes it and drafts version 2.
    let file = data.path().join("vattenlacka.toml");
    let toml = ok(api, &editor, &["templates", "show", "vattenlacka", "1"]).await;
    assert!(toml.contains("state = \"approved\""), "{toml}");
    std::fs::write(
        &file,
        toml.replace(
            "Vattenläcka – avstängt vatten i ett område",
            "Vattenläcka – vattnet är avstängt",
        ),
    )
    .unwrap();
    let drafted = ok(api, &editor, &["templates", "draft", path(&file)]).await;
    assert_eq!(drafted.trim(), "vattenlacka v2 utkast");

    let preview = ok(
        api,
        &editor,
        &[
            "templates",
            "preview",
            "vattenlacka",
            "2",
            "--var",
            "omrade=Farsta",
            "--var",
            "beraknat_klart=i kväll kl. 20",
            "--var",
            "vattenpunkt=“Farsta centrum”",
        ],
    )
    .await;
    assert!(preview.contains("== sv =="), "{preview}");
    assert!(preview.contains("[sms] ucs2"), "{preview}");
    assert!(
        preview.contains("VARNING [sms] typographic quote “ (U+201C) forces UCS-2"),
        "{preview}"
    );
    assert!(preview.contains("Kan godkännas."), "{preview}");
    assert!(
        preview.contains("[faran över: sms] Stockholms stad: Faran är över."),
        "the all-clear is shown: {preview}"
    );
    assert!(
        preview.contains("[rättelse: banner] Rättelse: vattnet i Farsta är inte avstängt"),
        "the correction is shown: {preview}"
    );
    let missing = fails(
        api,
        &editor,
        &[
            "templates",
            "preview",
            "vattenlacka",
            "2",
            "--var",
            "omrade=Farsta",
        ],
    )
    .await;
    assert!(
        missing.contains("[fält: variables.beraknat_klart]"),
        "{missing}"
    );

    let submitted = ok(api, &editor, &["templates", "submit", "vattenlacka", "2"]).await;
    assert_eq!(submitted.trim(), "vattenlacka v2 inlämnad");

    // The approver reads the diff, the author cannot approve, the approver can.
    let diff = ok(api, &approver, &["templates", "diff", "vattenlacka", "2"]).await;
    assert!(diff.contains("vattenlacka v2 jämfört med v1"), "{diff}");
    assert!(diff.contains("name (ändrat)"), "{diff}");
    assert!(
        diff.contains("+Vattenläcka – vattnet är avstängt"),
        "{diff}"
    );
    let refused = fails(api, &editor, &["templates", "approve", "vattenlacka", "2"]).await;
    assert!(refused.contains("403"), "{refused}");
    let approved = ok(
        api,
        &approver,
        &["templates", "approve", "vattenlacka", "2"],
    )
    .await;
    assert_eq!(approved.trim(), "vattenlacka v2 godkänd");
    let retired = ok(
        api,
        &admin,
        &[
            "templates",
            "retire",
            "vattenlacka",
            "1",
            "--reason",
            "ersatt av version 2",
        ],
    )
    .await;
    assert_eq!(retired.trim(), "vattenlacka v1 ur bruk");
    let history = ok(api, &duty, &["templates", "show", "vattenlacka"]).await;
    assert!(
        history.contains("ur bruk    admin.olle: ersatt av version 2"),
        "{history}"
    );
    assert!(history.contains("godkänd    granskare.erik"), "{history}");

    // Export, and import back: nothing new, since every version is there.
    let out = data.path().join("mallar");
    let exported = ok(api, &editor, &["templates", "export", path(&out)]).await;
    assert_eq!(exported.lines().count(), 5, "{exported}");
    assert!(out.join("vattenlacka.v2.toml").exists());
    let imported = ok(api, &editor, &["templates", "import", path(&out)]).await;
    assert_eq!(
        imported
            .lines()
            .filter(|l| l.contains("oförändrad"))
            .count(),
        4,
        "the retired v1 comes back as a draft; the rest is unchanged: {imported}"
    );
    assert!(
        imported.contains("utkast vattenlacka v3 (behöver lämnas in och godkännas)"),
        "{imported}"
    );

    // A malformed file stops the import before anything is sent, naming path and line.
    std::fs::write(
        out.join("trasig.toml"),
        "id = \"trasig\"\nname = \"Trasig\"\n[cap]\ncategory = \"Väder\"\n",
    )
    .unwrap();
    let err = fails(api, &editor, &["templates", "import", path(&out)]).await;
    assert!(
        err.contains("trasig.toml") && err.contains("line 4"),
        "{err}"
    );

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_version_is_rejected_with_a_reason_the_author_sees() {
    let running = Running::start().await;
    let editor = running.token(Role::TemplateEditor);
    let approver = running.token(Role::TemplateApprover);
    let api = running.api.as_str();

    let file = running.data.path().join("varmebolja.toml");
    let toml = ok(api, &editor, &["templates", "show", "varmebolja", "1"]).await;
    std::fs::write(
        &file,
        toml.replacen("name = \"", "name = \"Ny lydelse: ", 1),
    )
    .unwrap();
    let drafted = ok(api, &editor, &["templates", "draft", path(&file)]).await;
    assert_eq!(drafted.trim(), "varmebolja v2 utkast");

    // Only a submitted version can be rejected.
    let early = fails(
        api,
        &approver,
        &[
            "templates",
            "reject",
            "varmebolja",
            "2",
            "--reason",
            "För tidigt",
        ],
    )
    .await;
    assert!(early.contains("draft"), "{early}");
    ok(api, &editor, &["templates", "submit", "varmebolja", "2"]).await;

    // The author may not reject, and a rejection without a reason is refused.
    let by_author = fails(
        api,
        &editor,
        &[
            "templates",
            "reject",
            "varmebolja",
            "2",
            "--reason",
            "Ångrar mig",
        ],
    )
    .await;
    assert!(by_author.contains("403"), "{by_author}");
    let blank = fails(
        api,
        &approver,
        &["templates", "reject", "varmebolja", "2", "--reason", "  "],
    )
    .await;
    assert!(blank.contains("[fält: reason]"), "{blank}");

    let reason = "Säg vart man ringer: lägg till telefonnumret i SMS:et";
    let rejected = ok(
        api,
        &approver,
        &["templates", "reject", "varmebolja", "2", "--reason", reason],
    )
    .await;
    assert_eq!(rejected.trim(), "varmebolja v2 avslagen");

    // `show` tells the author who rejected it and why.
    let history = ok(api, &editor, &["templates", "show", "varmebolja"]).await;
    assert!(history.contains("v2   avslagen"), "{history}");
    assert!(
        history.contains(&format!("avslagen   granskare.erik: {reason}")),
        "{history}"
    );
    // A rejected version can be neither approved nor declared; version 1 stays.
    let again = fails(api, &approver, &["templates", "approve", "varmebolja", "2"]).await;
    assert!(again.contains("rejected"), "{again}");
    assert!(history.contains("v1   godkänd"), "{history}");

    running.stop().await;
}
