//! The edge's modules form layers: each may name (`crate::x`) only modules of a lower layer,
//! so no two modules import each other, directly or round a circle. The type system keeps a
//! layer's code away from the tables above it (each layer's state derefs only to the one below);
//! this test keeps the modules at one level from growing a circle, and every new module from
//! going unplaced. Doc comments are not imports and are not read.

use std::collections::BTreeMap;
use std::path::Path;

/// Lower first. A module may refer to modules of a lower rank only.
const LAYERS: &[(&str, u8)] = &[
    ("config", 0),
    ("dialog_info", 0),
    ("media", 0),
    ("ratelimit", 0),
    ("auth", 1),
    ("location", 1),
    ("services", 2),
    ("blf", 3),
    ("registrar", 3),
    ("trunk", 3),
    ("call", 4),
    ("park", 5),
    ("pickup", 6),
    ("draining", 7),
    ("core", 8),
    ("orbit", 9),
    ("router", 9),
    ("admin", 10),
    ("metrics", 10),
    ("driver", 11),
];

/// The top-level module a file belongs to (`park/recall.rs` → `park`), if it is one of the
/// edge's own (not the crate root or the unit tests).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "tests").then(|| name.to_string())
}

/// The modules `source` names as `crate::x`, outside comments and unit-test modules.
fn referenced(source: &str) -> Vec<String> {
    let code = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    let mut out = vec![];
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            // `crate::{a, b::C}` names each of a and b.
            let names = match rest.strip_prefix('{') {
                Some(group) => group.split(['}', ';']).next().unwrap_or(""),
                None => rest,
            };
            for part in names.split(',') {
                let name: String = part
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
                if !rest.starts_with('{') {
                    break;
                }
            }
        }
    }
    out
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(std::path::PathBuf, String)>) {
    for e in std::fs::read_dir(dir).expect("readable source directory") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).expect("under src").to_path_buf();
            out.push((rel, std::fs::read_to_string(&p).expect("readable source")));
        }
    }
}

#[test]
fn every_module_names_only_modules_below_it() {
    let rank: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&root, &root, &mut files);
    let mut wrong = vec![];
    for (rel, text) in &files {
        let Some(m) = module_of(rel) else { continue };
        let Some(&r) = rank.get(m.as_str()) else {
            wrong.push(format!(
                "{}: module `{m}` has no layer in LAYERS",
                rel.display()
            ));
            continue;
        };
        for to in referenced(text) {
            if to == m {
                continue;
            }
            match rank.get(to.as_str()) {
                Some(&t) if t < r => {}
                Some(_) => wrong.push(format!(
                    "{}: `{m}` (layer {r}) names `crate::{to}`, which is not below it",
                    rel.display()
                )),
                None => wrong.push(format!("{}: `crate::{to}` has no layer", rel.display())),
            }
        }
    }
    assert!(files.len() > 20, "the edge's sources were not found");
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_reference() {
    // The reader itself: a circle it could not see would pass unnoticed.
    let src = "use crate::park::Parking;\n// crate::router in a comment\nfn f() { crate::call::hangup(); }\nuse crate::{orbit, router::X};\n#[cfg(test)]\nmod tests { use crate::core::Edge; }";
    assert_eq!(referenced(src), ["park", "call", "orbit", "router"]);
    assert_eq!(
        module_of(Path::new("park/recall.rs")).as_deref(),
        Some("park")
    );
    assert_eq!(module_of(Path::new("tests/park.rs")), None);
}
