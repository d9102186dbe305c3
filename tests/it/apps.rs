//! The shipped Marathon app definitions (`marathon-test-app.json`, every
//! `docs/marathon-*.json` and the app JSON blocks of `docs/operations.md`) are valid Marathon apps for this executor: the fields
//! Marathon requires and the ones our deployment needs are there, every
//! `HOOK_EXECUTOR_*` variable they set exists in the executor's configuration
//! table, the executor accepts their environment as a whole (as it would in
//! the sandbox), and what Marathon makes of them is consumable: the task's
//! command is recovered and their Mesos-side health checks reach the TaskInfo.

use std::path::{Path, PathBuf};

use mesos_hook_executor::{
    config::{Config, HOOK_NAMES, PREFIX, VARIABLES},
    emulator::marathon,
    proto::v1::health_check,
    task::launch,
};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `marathon-test-app.json`, `docs/marathon-*.json` (sorted) and the app definitions in
/// `docs/operations.md`'s JSON blocks, with their parsed JSON.
fn app_definitions() -> Vec<(PathBuf, Value)> {
    let mut paths = vec![root().join("marathon-test-app.json")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("marathon-"))
        })
        .collect();
    docs.sort();
    paths.extend(docs);
    let mut apps: Vec<(PathBuf, Value)> = paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            (p, json)
        })
        .collect();
    // The app definitions shown in the deployment guide, too.
    let guide = root().join("docs/operations.md");
    let text = std::fs::read_to_string(&guide).expect("docs/operations.md");
    for (i, block) in text.split("```json\n").skip(1).enumerate() {
        let body = block.split("```").next().unwrap_or_default();
        if body.contains("\"executor\"") {
            let json = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("docs/operations.md JSON block {}: {e}", i + 1));
            apps.push((
                guide.with_file_name(format!("operations.md (JSON block {})", i + 1)),
                json,
            ));
        }
    }
    apps
}

fn name(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

fn env_of(app: &Value) -> Vec<(String, String)> {
    app.get("env")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .unwrap_or_else(|| panic!("env {k} is not a string"))
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn number(app: &Value, key: &str) -> Option<f64> {
    app.get(key).and_then(Value::as_f64)
}

/// The checks of one app definition; panics naming the file and the problem.
fn check_app(path: &Path, app: &Value) {
    let file = name(path);
    let fail = |what: String| -> ! { panic!("{file}: {what}") };

    // Marathon's own rules for the fields we use.
    let id = app
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| fail("no \"id\"".into()));
    let id_ok = id.starts_with('/')
        && id[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && seg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !id_ok {
        fail(format!(
            "id {id:?} is not an absolute Marathon path of lowercase letters, digits, '-' and '.'"
        ));
    }
    let cmd = app.get("cmd").and_then(Value::as_str);
    let args = app.get("args").and_then(Value::as_array);
    match (cmd, args) {
        (Some(c), None) if !c.trim().is_empty() => {}
        (None, Some(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {}
        _ => fail(
            "needs exactly one of a non-empty \"cmd\" or \"args\" (the executor runs it)".into(),
        ),
    }
    for (key, min) in [("cpus", 0.01), ("mem", 32.0)] {
        match number(app, key) {
            Some(v) if v >= min => {}
            other => fail(format!(
                "\"{key}\" is {other:?}, expected a number >= {min}"
            )),
        }
    }
    if let Some(instances) = app.get("instances") {
        assert!(
            instances.as_u64().is_some(),
            "{file}: \"instances\" is not a non-negative integer"
        );
    }
    if let Some(r) = app.get("executorResources") {
        // Marathon's minimums for executor resources.
        for (key, min) in [("cpus", 0.1), ("mem", 32.0), ("disk", 10.0)] {
            if let Some(v) = r.get(key) {
                assert!(
                    v.as_f64().is_some_and(|v| v >= min),
                    "{file}: executorResources.{key} must be a number >= {min}"
                );
            }
        }
    }

    // The executor: a path Marathon runs as `chmod ug+rx '<path>' && exec '<path>' <cmd>`,
    // either fetched into the sandbox (relative) or installed on the agent (absolute).
    let executor = app
        .get("executor")
        .and_then(Value::as_str)
        .unwrap_or_else(|| fail("no \"executor\" path".into()));
    if executor.is_empty() || executor == "//cmd" {
        fail(format!(
            "\"executor\" {executor:?} is Marathon's command executor, not ours"
        ));
    }
    let fetch: Vec<&Value> = app
        .get("fetch")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for f in &fetch {
        assert!(
            f.get("uri")
                .and_then(Value::as_str)
                .is_some_and(|u| !u.is_empty()),
            "{file}: a fetch entry has no \"uri\""
        );
    }
    let fetched = |basename: &str, extract: bool| {
        fetch.iter().any(|f| {
            f.get("uri")
                .and_then(Value::as_str)
                .is_some_and(|u| u.rsplit('/').next() == Some(basename))
                && f.get("extract").and_then(Value::as_bool).unwrap_or(true) == extract
        })
    };
    if !executor.starts_with('/') {
        let base = executor.trim_start_matches("./");
        assert!(
            !base.contains('/'),
            "{file}: a relative executor path should name a file the fetcher puts in the sandbox"
        );
        assert!(fetched(base, false), "{file}: executor {executor:?} is relative but no fetch entry delivers {base:?} unextracted");
        assert!(
            fetch
                .iter()
                .any(|f| f.get("executable").and_then(Value::as_bool) == Some(true)),
            "{file}: the fetched executor should be \"executable\": true"
        );
    }

    // Every HOOK_EXECUTOR_* variable exists in the executor's configuration table.
    let env = env_of(app);
    let known: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
    for (k, _) in env.iter().filter(|(k, _)| k.starts_with(PREFIX)) {
        assert!(
            known.contains(&k.as_str()),
            "{file}: {k} is not a variable of the executor (see `mesos-hook-executor --help`)"
        );
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let hooks: Vec<&str> = get("HOOK_EXECUTOR_HOOKS")
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for h in &hooks {
        assert!(HOOK_NAMES.contains(h), "{file}: unknown hook {h:?}");
    }
    if hooks.contains(&"consul") {
        let label = get("HOOK_EXECUTOR_CONSUL_SERVICE_LABEL").unwrap_or("consul");
        assert!(
            app.get("labels").and_then(|l| l.get(label)).is_some(),
            "{file}: the consul hook needs the {label:?} label"
        );
    }

    // The executor accepts the environment as a whole, as the agent would start
    // it (Marathon checkpoints, so the recovery variables are set). A relative
    // hooks directory is relative to the sandbox, where the fetcher extracts
    // hooks.tar.gz (the repository's hooks/ from `make release`).
    let mut vars: Vec<(String, String)> = [
        ("MESOS_FRAMEWORK_ID", "marathon-framework"),
        ("MESOS_EXECUTOR_ID", "marathon-app.1"),
        ("MESOS_SLAVE_PID", "slave(1)@192.168.56.10:5051"),
        ("MESOS_SLAVE_ID", "agent-1"),
        ("MESOS_CHECKPOINT", "1"),
        ("MESOS_RECOVERY_TIMEOUT", "15mins"),
        ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs"),
        ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"),
        ("MESOS_SANDBOX", "/tmp/sandbox"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in &env {
        let v = if k == "HOOK_EXECUTOR_HOOKS_DIR" && !v.starts_with('/') {
            assert!(
                fetched("hooks.tar.gz", true),
                "{file}: relative HOOK_EXECUTOR_HOOKS_DIR {v:?} but hooks.tar.gz is not fetched and extracted"
            );
            root().join(v).display().to_string()
        } else {
            v.clone()
        };
        vars.push((k.clone(), v));
    }
    let cfg = Config::from_vars(vars)
        .unwrap_or_else(|e| fail(format!("the executor refuses this environment: {e}")));
    assert!(
        cfg.unknown_variables().is_empty(),
        "{file}: unknown variables {:?}",
        cfg.unknown_variables()
    );
    assert_eq!(
        cfg.settings.hooks.chain,
        hooks.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
        "{file}: hook chain"
    );

    // What Marathon sends is consumable: the task's command comes back out of
    // the executor command, and a Mesos-side health check reaches the TaskInfo.
    let ports: Vec<u16> = (0..app
        .get("portDefinitions")
        .and_then(Value::as_array)
        .map_or(0, Vec::len))
        .map(|i| 31000 + i as u16)
        .collect();
    let launch = marathon::translate(
        app,
        &format!("{}.1", id.trim_start_matches('/').replace('/', "_")),
        "agent-1",
        "fw-1",
        &ports,
    )
    .unwrap_or_else(|e| fail(format!("does not translate: {e}")));
    let (program, source) = launch::program(&launch.task, Some(&launch.executor_info))
        .unwrap_or_else(|e| fail(format!("no command for the executor: {e}")));
    assert_eq!(
        source,
        launch::CommandSource::MarathonExecutorCommand,
        "{file}"
    );
    let expected = cmd.map(str::to_owned).unwrap_or_else(|| {
        args.into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    });
    assert_eq!(
        program,
        launch::Program::Shell { command: expected },
        "{file}: recovered task command"
    );

    let checks: Vec<&Value> = app
        .get("healthChecks")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for check in &checks {
        let protocol = check
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("HTTP");
        // Marathon-side HTTP/HTTPS/TCP checks never reach the executor (the
        // peer's example app made that mistake); ours must be Mesos-side.
        assert!(
            ["MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP", "COMMAND"].contains(&protocol),
            "{file}: health check protocol {protocol:?} is checked by Marathon itself, not by the executor"
        );
        if protocol == "COMMAND" {
            let value = check
                .get("command")
                .and_then(|c| c.get("value"))
                .and_then(Value::as_str);
            assert!(
                value.is_some_and(|v| !v.trim().is_empty()),
                "{file}: a COMMAND health check needs command.value"
            );
        } else if check.get("port").is_none() {
            let index = check.get("portIndex").and_then(Value::as_u64).unwrap_or(0);
            assert!(
                (index as usize) < ports.len(),
                "{file}: health check portIndex {index} has no port definition"
            );
        }
    }
    if let Some(first) = checks.first() {
        let hc = launch
            .task
            .health_check
            .as_ref()
            .unwrap_or_else(|| fail("the health check did not reach the TaskInfo".into()));
        let expected = match first.get("protocol").and_then(Value::as_str) {
            Some("COMMAND") => health_check::Type::Command,
            Some("MESOS_TCP") => health_check::Type::Tcp,
            _ => health_check::Type::Http,
        };
        assert_eq!(
            hc.r#type(),
            expected,
            "{file}: health check type in the TaskInfo"
        );
    }
}

#[test]
fn every_shipped_app_definition_is_valid_for_this_executor() {
    let apps = app_definitions();
    assert!(
        apps.len() >= 4,
        "expected marathon-test-app.json, the docs/ examples and the guide's, found {}",
        apps.len()
    );
    for (path, app) in &apps {
        check_app(path, app);
    }
}

#[test]
fn the_docs_examples_cover_a_consul_service_and_a_batch_app_with_a_command_check() {
    let apps = app_definitions();
    let docs: Vec<&Value> = apps
        .iter()
        .filter(|(p, _)| p.starts_with(root().join("docs")))
        .map(|(_, a)| a)
        .collect();
    let hooks_of = |a: &Value| {
        a.pointer("/env/HOOK_EXECUTOR_HOOKS")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let protocols = |a: &Value| -> Vec<String> {
        a.get("healthChecks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("protocol")?.as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        docs.iter().any(|a| hooks_of(a).contains("consul")
            && a.pointer("/labels/consul").is_some()
            && a.pointer("/env/HOOK_EXECUTOR_HOOKS_DIR").is_some()
            && protocols(a).contains(&"MESOS_HTTP".to_owned())),
        "docs/ needs a service example with the consul hook and label, a hooks dir and a MESOS_HTTP health check"
    );
    assert!(
        docs.iter()
            .any(|a| protocols(a).contains(&"COMMAND".to_owned())
                && a.pointer("/healthChecks/0/command/value")
                    .and_then(Value::as_str)
                    .is_some()),
        "docs/ needs a batch-style example with a COMMAND health check"
    );
}

#[test]
fn a_misspelt_variable_or_a_marathon_side_check_is_caught() {
    let (path, mut app) = app_definitions().remove(0);
    app["env"]["HOOK_EXECUTOR_KILL_GRACE_PERIDO"] = Value::from("5secs");
    let typo = std::panic::catch_unwind(|| check_app(&path, &app))
        .expect_err("a misspelt variable must fail the check");
    let text = typo.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("HOOK_EXECUTOR_KILL_GRACE_PERIDO is not a variable"),
        "{text}"
    );

    let (path, mut app) = app_definitions().remove(0);
    app["healthChecks"][0]["protocol"] = Value::from("HTTP");
    let marathon_side = std::panic::catch_unwind(|| check_app(&path, &app))
        .expect_err("a Marathon-side check must fail the check");
    let text = marathon_side
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(text.contains("checked by Marathon itself"), "{text}");
}
