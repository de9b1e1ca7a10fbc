//! The authors' kit: `gantry new` writes a connector project from the templates embedded in
//! the binary (`templates/`); `gantry build` runs the project's toolchain and leaves the
//! component beside it.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The languages `gantry new` writes projects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

#[derive(Args)]
pub struct NewArgs {
    /// The connector's name (lowercase letters, digits and `-`, starting with a letter): also
    /// the directory created and the component's file name.
    name: String,
    /// The language of the project.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create the project (default: ./NAME). It must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The project directory (default: the current one).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Where to write the component (default: NAME.wasm in the project directory).
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// A file of a template: its path in the new project and its text (`{{name}}` is replaced).
type File = (&'static str, &'static str);

/// Gantry's WIT world: written into every project (inside the Rust SDK for Rust).
const WIT: [File; 10] = [
    ("world.wit", include_str!("../wit/world.wit")),
    ("deps/cli.wit", include_str!("../wit/deps/cli.wit")),
    ("deps/clocks.wit", include_str!("../wit/deps/clocks.wit")),
    (
        "deps/filesystem.wit",
        include_str!("../wit/deps/filesystem.wit"),
    ),
    ("deps/http.wit", include_str!("../wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../wit/deps/io.wit")),
    ("deps/random.wit", include_str!("../wit/deps/random.wit")),
    ("deps/sockets.wit", include_str!("../wit/deps/sockets.wit")),
    (
        "deps/config/store.wit",
        include_str!("../wit/deps/config/store.wit"),
    ),
    (
        "deps/config/world.wit",
        include_str!("../wit/deps/config/world.wit"),
    ),
];

const RUST: [File; 7] = [
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("README.md", include_str!("../templates/rust/README.md")),
    (".gitignore", include_str!("../templates/rust/gitignore")),
    (
        "gantry-sdk/Cargo.toml",
        include_str!("../sample-connectors/sdk/Cargo.toml"),
    ),
    (
        "gantry-sdk/src/lib.rs",
        include_str!("../sample-connectors/sdk/src/lib.rs"),
    ),
    (
        "gantry-sdk/README.md",
        include_str!("../sample-connectors/sdk/README.md"),
    ),
];

const JS: [File; 6] = [
    ("package.json", include_str!("../templates/js/package.json")),
    (
        "src/connector.js",
        include_str!("../templates/js/src/connector.js"),
    ),
    ("src/item.js", include_str!("../templates/js/src/item.js")),
    (
        "test/item.test.js",
        include_str!("../templates/js/test/item.test.js"),
    ),
    ("README.md", include_str!("../templates/js/README.md")),
    (".gitignore", include_str!("../templates/js/gitignore")),
];

const PYTHON: [File; 7] = [
    (
        "pyproject.toml",
        include_str!("../templates/python/pyproject.toml"),
    ),
    (
        "build-requirements.txt",
        include_str!("../templates/python/build-requirements.txt"),
    ),
    ("app.py", include_str!("../templates/python/app.py")),
    ("item.py", include_str!("../templates/python/item.py")),
    (
        "test_item.py",
        include_str!("../templates/python/test_item.py"),
    ),
    ("README.md", include_str!("../templates/python/README.md")),
    (".gitignore", include_str!("../templates/python/gitignore")),
];

/// The world JavaScript and Python components target: their toolchains import the whole of
/// it, and `plugin` also holds the filesystem and sockets the sandbox never grants.
const WORLD: &str = "sandboxed";

/// The componentize-js command (from the project's node_modules).
const COMPONENTIZE_JS: &str = "node_modules/.bin/componentize-js";

pub fn new(args: NewArgs) -> Result<()> {
    gantry_host::model::validate_name("connector name", &args.name)?;
    if !args.name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!(
            "invalid connector name: `{}` must start with a letter (it names a crate, an npm \
             package or a Python project)",
            args.name
        );
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let (files, wit_dir): (&[File], &str) = match args.lang {
        Lang::Rust => (&RUST, "gantry-sdk/wit"),
        Lang::Js => (&JS, "wit"),
        Lang::Python => (&PYTHON, "wit"),
    };
    let wit = WIT
        .iter()
        .map(|(path, text)| (format!("{wit_dir}/{path}"), *text));
    for (path, text) in files
        .iter()
        .map(|(path, text)| (path.to_string(), *text))
        .chain(wit)
    {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text.replace("{{name}}", &args.name))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {} ({:?}): cd {} && gantry build && gantry check {}.wasm",
        dir.display(),
        args.lang,
        dir.display(),
        args.name
    );
    Ok(())
}

/// What `gantry build` found in the project directory.
struct Project {
    lang: Lang,
    name: String,
}

fn project(dir: &Path) -> Result<Project> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    if dir.join("Cargo.toml").is_file() {
        let manifest: toml::Table = read("Cargo.toml")?.parse().context("Cargo.toml")?;
        let name = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .context("Cargo.toml has no [package] name")?;
        return Ok(Project {
            lang: Lang::Rust,
            name: name.to_string(),
        });
    }
    if dir.join("package.json").is_file() {
        let manifest: serde_json::Value =
            serde_json::from_str(&read("package.json")?).context("package.json")?;
        let name = manifest["name"]
            .as_str()
            .context("package.json has no name")?;
        return Ok(Project {
            lang: Lang::Js,
            name: name.to_string(),
        });
    }
    if dir.join("app.py").is_file() {
        let manifest: toml::Table = read("pyproject.toml")?.parse().context("pyproject.toml")?;
        let name = manifest
            .get("project")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .context("pyproject.toml has no [project] name")?;
        return Ok(Project {
            lang: Lang::Python,
            name: name.to_string(),
        });
    }
    bail!(
        "{} holds no connector project: expected Cargo.toml (Rust), package.json (JavaScript) \
         or app.py with pyproject.toml (Python); `gantry new` writes one",
        dir.display()
    )
}

/// Run `command` in `dir`, its output passed through; fail naming `what` unless it succeeds.
fn run(what: &str, dir: &Path, command: &mut Command) -> Result<()> {
    let status = command
        .current_dir(dir)
        .status()
        .with_context(|| format!("running {what} (is it installed?)"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn build(args: BuildArgs) -> Result<()> {
    // Absolute: the toolchains run in the project directory, found by paths inside it.
    let dir = &std::path::absolute(&args.dir)?;
    let project = project(dir)?;
    let out = match args.out {
        Some(out) => std::path::absolute(out)?,
        None => std::path::absolute(dir.join(format!("{}.wasm", project.name)))?,
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let started = std::time::Instant::now();
    match project.lang {
        Lang::Rust => build_rust(dir, &out)?,
        Lang::Js => {
            if !dir.join(COMPONENTIZE_JS).exists() {
                run(
                    "npm install",
                    dir,
                    Command::new("npm").args(["install", "--no-audit", "--no-fund"]),
                )?;
            }
            let main = std::fs::read_to_string(dir.join("package.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|manifest| manifest["main"].as_str().map(str::to_string))
                .unwrap_or_else(|| "src/connector.js".into());
            run(
                "componentize-js",
                dir,
                Command::new(dir.join(COMPONENTIZE_JS))
                    .args(["--wit", "wit", "--world-name", WORLD, "--out"])
                    .arg(&out)
                    .arg(main),
            )?;
        }
        Lang::Python => {
            let componentize = python_toolchain(dir)?;
            run(
                "componentize-py",
                dir,
                Command::new(componentize)
                    .args(["-d", "wit", "-w", WORLD, "componentize", "app", "-o"])
                    .arg(&out)
                    // No __pycache__ left in the project.
                    .env("PYTHONDONTWRITEBYTECODE", "1"),
            )?;
        }
    }
    let size = std::fs::metadata(&out)
        .with_context(|| format!("the build wrote no {}", out.display()))?
        .len();
    println!(
        "built {} ({} bytes) in {:.1} s",
        out.display(),
        size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo build --release --target wasm32-wasip2`, then copy the component to `out`.
fn build_rust(dir: &Path, out: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo (is Rust installed? `rustup target add wasm32-wasip2`)")?;
    if !output.status.success() {
        bail!(
            "cargo build failed ({}); for the target: `rustup target add wasm32-wasip2`",
            output.status
        );
    }
    // The component is the `.wasm` of the project's own cdylib artifact.
    let mut built = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let local = message["package_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("path+file://"))
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !local {
            continue;
        }
        if let Some(files) = message["filenames"].as_array() {
            built = files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
                .or(built);
        }
    }
    let built = built.context(
        "cargo built no .wasm: is the crate a cdylib (`[lib] crate-type = [\"cdylib\"]`)?",
    )?;
    std::fs::copy(&built, out)
        .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(())
}

/// The project's componentize-py: `.venv/bin/componentize-py`, made on first use from
/// `build-requirements.txt`.
fn python_toolchain(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join(".venv");
    let componentize = venv.join("bin").join("componentize-py");
    if componentize.exists() {
        return Ok(componentize);
    }
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    run(
        "python3 -m venv .venv",
        dir,
        Command::new(python).args(["-m", "venv", ".venv"]),
    )?;
    run(
        "pip install -r build-requirements.txt",
        dir,
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            "build-requirements.txt",
        ]),
    )?;
    Ok(componentize)
}
