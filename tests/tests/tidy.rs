//! Tidy: the rules that keep the code base easy to see, checked on the source
//! tree itself (in the manner of rust-analyzer's `tidy.rs`).
//!
//! - no service crate depends on another service crate;
//! - no crate but the harness itself depends on `krisbud-tests` outside its
//!   dev-dependencies (the product never links the test harness);
//! - no `match` on `Channel` or `AlertStatus` has a wildcard arm, so adding a
//!   channel or a status is a compile error at every place that must decide;
//! - every Rust source file opens with a `//!` header;
//! - no file's code (what precedes its `#[cfg(test)]` module) passes
//!   [`MAX_CODE_LINES`], and no test file passes [`MAX_TEST_LINES`], unless
//!   [`LONG_FILES`] gives the reason;
//! - ARCHITECTURE.md's code map names every workspace crate, and every file the
//!   docs name exists;
//! - `cargo run -p krisbud` builds every dependency with the features `cargo test
//!   --workspace` builds it with, so the README's two commands share one build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use quote::ToTokens;
use syn::visit::Visit;

/// Lines of code (before the unit tests) a source file may have.
const MAX_CODE_LINES: usize = 700;
/// Lines an integration-test file may have: a list of scenarios reads well
/// longer than code does, but not without end.
const MAX_TEST_LINES: usize = 1_200;

/// Files allowed past the limit, each with the reason.
const LONG_FILES: &[(&str, &str)] = &[
    (
        "tests/src/smtp.rs",
        "one SMTP server in three modes (plain, STARTTLS, implicit TLS) with its wire \
         watcher and test CA; splitting it would scatter one server's state",
    ),
    (
        "services/krisbud/src/audit_cli.rs",
        "every `krisbud audit` subcommand with its argument checks and Swedish output",
    ),
    (
        "services/krisbud/src/bench.rs",
        "the fan-out benchmark as one readable script: set-up, baseline, timed run, report",
    ),
    (
        "services/audit/src/chain.rs",
        "the hash chain and its Verifier: the normative record encoding and every \
         check an auditor relies on, read best together",
    ),
    (
        "services/gateway/src/openapi.rs",
        "the OpenAPI document of every route",
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The workspace members, as paths relative to the root.
fn members() -> Vec<String> {
    let manifest: toml::Value = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
        .iter()
        .map(|m| m.as_str().expect("a member path").to_string())
        .collect()
}

struct Manifest {
    path: String,
    name: String,
    /// Dependencies the crate's library and binaries link.
    normal: BTreeSet<String>,
    /// Every dependency, dev-dependencies included.
    all: BTreeSet<String>,
}

fn manifest(member: &str) -> Manifest {
    let toml: toml::Value = toml::from_str(&read(&root().join(member).join("Cargo.toml"))).unwrap();
    let names = |section: &str| -> BTreeSet<String> {
        toml.get(section)
            .and_then(|t| t.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    };
    let normal: BTreeSet<String> = names("dependencies")
        .into_iter()
        .chain(names("build-dependencies"))
        .collect();
    let all = normal
        .iter()
        .cloned()
        .chain(names("dev-dependencies"))
        .collect();
    Manifest {
        path: member.to_string(),
        name: toml["package"]["name"].as_str().unwrap().to_string(),
        normal,
        all,
    }
}

/// A service crate: one under `services/` that runs as a service (not the
/// shared runtime, not the binary that runs them all).
fn is_service(m: &Manifest) -> bool {
    m.path.starts_with("services/") && m.path != "services/kit" && m.path != "services/krisbud"
}

#[test]
fn no_service_crate_depends_on_another() {
    let manifests: Vec<Manifest> = members().iter().map(|m| manifest(m)).collect();
    let services: BTreeSet<&str> = manifests
        .iter()
        .filter(|m| is_service(m))
        .map(|m| m.name.as_str())
        .collect();
    assert!(services.len() >= 7, "the services are found: {services:?}");
    let mut wrong = Vec::new();
    for m in manifests.iter().filter(|m| is_service(m)) {
        for dep in &m.all {
            if dep != &m.name && services.contains(dep.as_str()) {
                wrong.push(format!("{} depends on {dep}", m.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "service crates depend on each other: {wrong:#?}"
    );
}

#[test]
fn no_product_crate_links_the_test_harness() {
    let mut wrong = Vec::new();
    for m in members().iter().map(|m| manifest(m)) {
        if m.name != "krisbud-tests" && m.normal.contains("krisbud-tests") {
            wrong.push(m.name);
        }
    }
    assert!(
        wrong.is_empty(),
        "these crates link krisbud-tests outside [dev-dependencies]: {wrong:?}"
    );
}

/// Every `.rs` file of the workspace (not `target/`), relative to the root.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target"
                    && name != "node_modules"
                    && !name.to_string_lossy().starts_with('.')
                {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut out = Vec::new();
    for member in members() {
        walk(&root.join(member), &mut out);
    }
    out.sort();
    out.into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect()
}

#[test]
fn every_source_file_opens_with_a_header() {
    let files = sources();
    assert!(files.len() > 100, "the sources are found: {}", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !read(&root().join(f)).starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:#?}"
    );
}

fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests") && !path.starts_with("tests/src")
}

#[test]
fn no_file_grows_past_its_limit_without_a_reason() {
    let mut long = Vec::new();
    let mut needed = BTreeSet::new();
    for file in sources() {
        let text = read(&root().join(&file));
        let (lines, limit) = if is_test_file(&file) {
            (text.lines().count(), MAX_TEST_LINES)
        } else {
            let code = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
            (code, MAX_CODE_LINES)
        };
        let name = file.to_string_lossy().to_string();
        if lines > limit {
            if LONG_FILES.iter().any(|(f, _)| *f == name) {
                needed.insert(name);
            } else {
                long.push(format!("{name}: {lines} lines (limit {limit})"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these files, or give the reason in LONG_FILES: {long:#?}"
    );
    let stale: Vec<_> = LONG_FILES
        .iter()
        .filter(|(f, _)| !needed.contains(*f))
        .map(|(f, _)| f)
        .collect();
    assert!(
        stale.is_empty(),
        "these files are within the limit now; take them off LONG_FILES: {stale:?}"
    );
}

/// Finds `match` expressions that name a variant of one of `enums` in an arm and
/// also have a wildcard arm.
struct Wildcards<'a> {
    enums: &'a [&'a str],
    found: Vec<String>,
}

fn names_enum(pat: &syn::Pat, enums: &[&str]) -> bool {
    struct Finder<'a> {
        enums: &'a [&'a str],
        hit: bool,
    }
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_path(&mut self, path: &'ast syn::Path) {
            let segments: Vec<_> = path.segments.iter().collect();
            if segments.len() >= 2
                && self
                    .enums
                    .contains(&segments[segments.len() - 2].ident.to_string().as_str())
            {
                self.hit = true;
            }
            syn::visit::visit_path(self, path);
        }
    }
    let mut finder = Finder { enums, hit: false };
    finder.visit_pat(pat);
    finder.hit
}

fn is_wildcard(pat: &syn::Pat) -> bool {
    match pat {
        syn::Pat::Wild(_) => true,
        syn::Pat::Or(or) => or.cases.iter().any(is_wildcard),
        // `other => …` catches every variant just like `_`.
        syn::Pat::Ident(ident) => {
            ident.subpat.is_none() && ident.by_ref.is_none() && {
                let name = ident.ident.to_string();
                name.starts_with(|c: char| c.is_lowercase() || c == '_')
            }
        }
        _ => false,
    }
}

impl<'ast> Visit<'ast> for Wildcards<'_> {
    fn visit_expr_match(&mut self, m: &'ast syn::ExprMatch) {
        let on_enum = m.arms.iter().any(|a| names_enum(&a.pat, self.enums));
        if on_enum && m.arms.iter().any(|a| is_wildcard(&a.pat)) {
            let scrutinee = m.expr.to_token_stream().to_string();
            self.found.push(format!("match {scrutinee}"));
        }
        syn::visit::visit_expr_match(self, m);
    }
}

#[test]
fn matches_on_channel_and_alert_status_are_exhaustive() {
    let enums = ["Channel", "AlertStatus"];
    let mut wrong = Vec::new();
    let mut matches_seen = 0;
    for file in sources() {
        let text = read(&root().join(&file));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut visitor = Wildcards {
            enums: &enums,
            found: Vec::new(),
        };
        visitor.visit_file(&ast);
        matches_seen += text.matches("Channel::").count();
        for at in visitor.found {
            wrong.push(format!("{}: {at} {{ … }}", file.display()));
        }
    }
    assert!(matches_seen > 50, "the channel matches are found");
    assert!(
        wrong.is_empty(),
        "a match on Channel or AlertStatus with a wildcard arm treats a new variant \
         silently; name every variant: {wrong:#?}"
    );
}

/// Each package of `cargo tree` with `args`, and its features.
fn features(args: &[&str]) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "tree", "--locked", "--prefix", "none", "--format", "{p}|{f}",
        ])
        .args(args)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_package = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        // Workspace crates are compiled anyway; `(*)` marks a repeat.
        if package.contains("(/") {
            continue;
        }
        let features = features.trim_end_matches(" (*)").trim();
        by_package
            .entry(package.trim_end_matches(" (*)").trim().to_owned())
            .or_default()
            .extend(
                features
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned),
            );
    }
    by_package
}

#[test]
fn the_run_command_reuses_the_test_build() {
    // What `cargo run -p krisbud` builds, for this machine's target.
    let run = features(&["-p", "krisbud", "-e", "normal,build"]);
    // What `cargo test --workspace` builds.
    let test = features(&["--workspace", "-e", "normal,build,dev"]);
    let differ: Vec<String> = run
        .iter()
        .filter(|(package, f)| test.get(*package).is_some_and(|t| t != *f))
        .map(|(package, f)| format!("{package}: run {f:?}, test {:?}", test[package]))
        .collect();
    assert!(
        differ.is_empty(),
        "built twice with different features (run `cargo hakari generate`): {differ:#?}"
    );
}

#[test]
fn the_code_map_names_every_crate() {
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let map_start = architecture.find("## Code map").expect("a code map");
    let map_end = architecture[map_start + 1..]
        .find("\n## ")
        .map_or(architecture.len(), |i| map_start + 1 + i);
    let map = &architecture[map_start..map_end];
    let missing: Vec<_> = members()
        .into_iter()
        .filter(|m| !map.contains(&format!("**`{m}`**")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map lacks these crates (as **`path`**): {missing:?}"
    );
}

/// The module files of a crate's `src/` that a file's paths lead to: each
/// `crate::…`, `super::…` and `self::…` path (in `use` items and in code) is
/// followed through module files as far as they go.
struct ModuleRefs<'a> {
    src: &'a Path,
    /// The directory of the file's own module's children.
    here: PathBuf,
    found: BTreeSet<PathBuf>,
}

impl ModuleRefs<'_> {
    fn module_file(dir: &Path, name: &str) -> Option<PathBuf> {
        [
            dir.join(format!("{name}.rs")),
            dir.join(name).join("mod.rs"),
        ]
        .into_iter()
        .find(|p| p.is_file())
    }

    fn follow(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let (mut dir, rest) = match first.as_str() {
            "crate" => (self.src.to_path_buf(), &segments[1..]),
            "super" => (
                self.here
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                &segments[1..],
            ),
            "self" => (self.here.clone(), &segments[1..]),
            _ => return,
        };
        let mut file = None;
        for segment in rest {
            match Self::module_file(&dir, segment) {
                Some(f) => {
                    dir = dir.join(segment);
                    file = Some(f);
                }
                None => break,
            }
        }
        let file = file.unwrap_or_else(|| {
            // An item of the module `dir` itself.
            if dir == self.src {
                self.src.join("lib.rs")
            } else {
                Self::module_file(
                    dir.parent().unwrap(),
                    &dir.file_name().unwrap().to_string_lossy(),
                )
                .unwrap_or_default()
            }
        });
        self.found.insert(file);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.follow(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.follow(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.follow(prefix),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix, item);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for ModuleRefs<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.follow(&segments);
        syn::visit::visit_path(self, path);
    }

    // `pub(crate)` names no module to depend on.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    // `mod tests { use super::*; }` refers to the file it is in.
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if item.content.is_none() {
            return;
        }
        let inner = self.here.join(item.ident.to_string());
        let here = std::mem::replace(&mut self.here, inner);
        syn::visit::visit_item_mod(self, item);
        self.here = here;
    }
}

/// A cycle among the files of `src`, if there is one, as the files around it.
fn import_cycle(src: &Path) -> Option<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut edges: std::collections::BTreeMap<PathBuf, BTreeSet<PathBuf>> = Default::default();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let here = if name == "mod" || name == "lib" || name == "main" {
            file.parent().unwrap().to_path_buf()
        } else {
            file.parent().unwrap().join(&name)
        };
        let mut refs = ModuleRefs {
            src,
            here,
            found: BTreeSet::new(),
        };
        refs.visit_file(&syn::parse_file(&read(file)).unwrap());
        refs.found.remove(file);
        refs.found.retain(|f| !f.as_os_str().is_empty());
        edges.insert(file.clone(), refs.found);
    }
    // Depth-first search for a back edge.
    fn visit(
        at: &PathBuf,
        edges: &std::collections::BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        path: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            return Some(path[i..].to_vec());
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at.clone());
        None
    }
    let mut done = BTreeSet::new();
    for file in edges.keys() {
        if let Some(cycle) = visit(file, &edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_coordinator_s_modules_import_each_other_without_a_circle() {
    let src = root().join("services/coordinator/src");
    if let Some(cycle) = import_cycle(&src) {
        let names: Vec<_> = cycle
            .iter()
            .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
            .collect();
        panic!("an import circle: {}", names.join(" → "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "//! x\nmod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "//! a\nuse crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "//! b\npub struct B(super::a::A);\n").unwrap();
    let cycle = import_cycle(src).expect("a → b → a");
    assert_eq!(cycle.len(), 2, "{cycle:?}");
}

#[test]
fn every_file_the_docs_name_exists() {
    let root = root();
    let names: BTreeSet<String> = sources()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    let mut missing = Vec::new();
    for doc in ["ARCHITECTURE.md", "README.md", "docs/audit-format.md"] {
        let text = read(&root.join(doc));
        for quoted in text.split('`').skip(1).step_by(2) {
            let is_file =
                quoted.ends_with(".rs") || quoted.ends_with(".md") || quoted.ends_with(".toml");
            // A path outside the repository (`../shared/DESIGN.md`) is not ours
            // to check: a clone may stand anywhere.
            let outside = quoted.starts_with("../");
            if !is_file
                || outside
                || quoted.contains(' ')
                || quoted.contains('<')
                || quoted.contains('*')
            {
                continue;
            }
            let found = if quoted.contains('/') {
                // A path: from the root, or from a crate's directory.
                root.join(quoted).exists()
                    || members().iter().any(|m| {
                        root.join(m).join(quoted).exists()
                            || root.join(m).join("src").join(quoted).exists()
                    })
                    || root.join("services").join(quoted).exists()
            } else {
                names.contains(quoted) || root.join(quoted).exists()
            };
            if !found {
                missing.push(format!("{doc}: `{quoted}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name files that do not exist: {missing:#?}"
    );
}

/// Every type the OpenAPI document describes has its JSON Schema in
/// `proto/schema/`: the bodies that cross the gateway are wire contract.
#[test]
fn every_gateway_body_has_its_schema_in_proto() {
    let document = krisbud_gateway::openapi::document();
    let published: BTreeSet<String> = krisbud_proto::schema::all()
        .into_iter()
        .filter_map(|(_, schema)| {
            schema
                .as_object()
                .and_then(|o| o.get("title"))
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        })
        .collect();
    let described: Vec<String> = document["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(described.len() > 20, "{described:?}");
    // Types that only appear inside another body are covered by its schema.
    let top_level: BTreeSet<String> = serde_json::to_string(&document["paths"])
        .unwrap()
        .split("#/components/schemas/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    let missing: Vec<&String> = top_level
        .iter()
        .filter(|t| !published.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "bodies the gateway reads or writes without a schema in proto/schema: {missing:?}"
    );
}
