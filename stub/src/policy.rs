//! The install's decisions as pure functions, beside [`crate::machine`]:
//! the effects layer ([`crate::run`]) gathers facts into plain structs,
//! and these turn them into the machine's next event, or a refusal. No
//! I/O, no clock; every rule has a row in a table-driven test.

use crate::error::{Class, Error};
use crate::machine::{Event, State};
use nxs_format::checkpoint::Checkpoint;
use nxs_format::{Manifest, Version};

/// Runs of one bundle that may fail in a row before install gives up.
pub const MAX_FAILED_RUNS: usize = 5;

/// Failed runs since the last good one, as the checkpoint's history tells.
pub fn failed_runs(c: &Checkpoint) -> usize {
    c.history
        .iter()
        .rev()
        .take_while(|h| !matches!(h.state, State::Running | State::SafeMode))
        .filter(|h| h.state == State::Failed)
        .count()
}

/// Refuses (exit 11) a bundle that failed [`MAX_FAILED_RUNS`] runs in a
/// row here, unless the operator asks to try again.
pub fn give_up(found: &Checkpoint, bundle_id: &str, retry_failed: bool) -> Result<(), Error> {
    let n = failed_runs(found);
    if n >= MAX_FAILED_RUNS && found.bundle_id == bundle_id && !retry_failed {
        return Err(Error::new(
            Class::GaveUp,
            format!(
                "{} failed {n} runs in a row, the last at: {}",
                found.bundle_id,
                found.last_error.as_deref().unwrap_or("unknown")
            ),
        )
        .hint("see the diagnostic dumps in the state directory's diag/; fix the cause, then run install with --retry-failed"));
    }
    Ok(())
}

/// Refuses to go below the highest version installed here, or below the
/// version in the root, unless asked to.
pub fn downgrade(
    new: &Version,
    installed: Option<&Version>,
    highest: Option<&Version>,
    allow: bool,
) -> Result<(), Error> {
    let top = match (installed, highest) {
        (Some(a), Some(b)) => Some(if a > b { a } else { b }),
        (a, b) => a.or(b),
    };
    match top {
        Some(top) if top > new && !allow => Err(Error::new(
            Class::Incompatible,
            format!("version {top} has been installed here, newer than this bundle's {new}: refusing a downgrade"),
        )
        .hint("pass --allow-downgrade to install an older version on purpose")),
        _ => Ok(()),
    }
}

/// Refuses a bundle whose root chain ends below the highest root
/// accepted here (freeze and rollback: TUF's attack list, section 1.5.2),
/// exit 4; or at that version (from 2) with other bytes (a forked root), exit 3;
/// unless the operator forces it.
pub fn root_rollback(bundle: (u64, &[u8; 32]), highest: Option<(u64, [u8; 32])>, allow: bool) -> Result<(), Error> {
    let Some((top, top_sha)) = highest else { return Ok(()) };
    let hint = "pass --allow-root-rollback to install it anyway, on purpose (docs/TRUST.md)";
    if allow {
        return Ok(());
    }
    if bundle.0 < top {
        return Err(Error::new(
            Class::Incompatible,
            format!(
                "root version {top} has been accepted here, and this bundle's root chain ends at version {}: refusing a rollback of trust",
                bundle.0
            ),
        )
        .hint(hint));
    }
    // Version 1 is never carried, only embedded: two stubs may embed two
    // different ones (a `[trust] keys` list that changed), and no chain
    // leads from one to the other. From version 2 a root is reached by a
    // signed step, and another root of that version is a fork.
    if bundle.0 == top && top >= 2 && bundle.1 != &top_sha {
        return Err(Error::new(
            Class::Verify,
            format!("this bundle's root {top} is not the root {top} accepted here (the same version with other bytes)"),
        )
        .hint(hint));
    }
    Ok(())
}

/// What DETECTING found on the machine.
pub struct Survey<'a> {
    pub bundle: &'a Manifest,
    /// The install record in the root, if any.
    pub installed: Option<&'a Manifest>,
    /// The checkpoint says this root is RUNNING.
    pub running_here: bool,
    /// The root is missing or empty.
    pub root_empty: bool,
    /// Problems found in the root's tree: asked for only when the root
    /// holds this very bundle and is not known to be running.
    pub tree_problems: Option<usize>,
    /// The highest version ever installed with this state directory.
    pub highest: Option<&'a Version>,
    pub allow_downgrade: bool,
    /// The root's path, for messages.
    pub root: &'a str,
}

impl Survey<'_> {
    /// Whether DETECTING must check the root's tree, byte for byte, before
    /// [`detect`] can decide: the root holds this bundle's own signed
    /// manifest (not just the same payload), and the run is not already
    /// known to be done.
    pub fn needs_tree_check(bundle: &Manifest, installed: Option<&Manifest>, running_here: bool) -> bool {
        installed == Some(bundle) && !running_here
    }
}

/// DETECTING's decision: the machine's next event, or a refusal.
pub fn detect(s: &Survey) -> Result<Event, Error> {
    let Some(old) = s.installed else {
        if !s.root_empty {
            return Err(Error::new(Class::Io, format!("{} is not empty and holds no nxs install", s.root))
                .hint("choose an empty or new directory for --root"));
        }
        downgrade(&s.bundle.version, None, s.highest, s.allow_downgrade)?;
        return Ok(Event::NoInstall);
    };
    if old == s.bundle {
        if s.running_here {
            return Ok(Event::SameInstallRunning);
        }
        // Resume past the switch, but only over a tree that still matches.
        if s.tree_problems == Some(0) {
            return Ok(Event::SameInstallPresent);
        }
    }
    if old.target != s.bundle.target {
        return Err(Error::new(
            Class::Incompatible,
            format!("{} holds an install for {}, this bundle is for {}", s.root, old.target, s.bundle.target),
        )
        .hint("use the bundle built for the installed platform"));
    }
    downgrade(&s.bundle.version, Some(&old.version), s.highest, s.allow_downgrade)?;
    Ok(Event::InstallFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nxs_format::checkpoint::HistoryRecord;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn manifest(version: &str, target: &str) -> Manifest {
        let mut m = crate::test_manifest(vec![], nxs_format::Region { len: 0, sha256: [0; 32] }, vec![]);
        m.version = v(version);
        m.target = target.into();
        m
    }

    #[test]
    fn detect_decides_from_the_survey() {
        let bundle = manifest("2.0", "x86_64");
        let older = manifest("1.0", "x86_64");
        let newer = manifest("3.0", "x86_64");
        let foreign = manifest("1.0", "aarch64");
        let (h1, h5) = (v("1.0"), v("5.0"));
        // (installed, running here, root empty, tree problems, highest, allow downgrade) -> event or exit class
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            Option<&Manifest>,
            bool,
            bool,
            Option<usize>,
            Option<&Version>,
            bool,
            Result<Event, Class>,
        )> = vec![
            (None, false, true, None, None, false, Ok(Event::NoInstall)),
            (None, false, true, None, Some(&h1), false, Ok(Event::NoInstall)),
            (None, false, true, None, Some(&h5), false, Err(Class::Incompatible)),
            (None, false, true, None, Some(&h5), true, Ok(Event::NoInstall)),
            (None, false, false, None, None, false, Err(Class::Io)),
            (Some(&bundle), true, false, None, None, false, Ok(Event::SameInstallRunning)),
            (Some(&bundle), false, false, Some(0), None, false, Ok(Event::SameInstallPresent)),
            (Some(&bundle), false, false, Some(3), None, false, Ok(Event::InstallFound)),
            (Some(&older), false, false, None, None, false, Ok(Event::InstallFound)),
            (Some(&older), true, false, None, None, false, Ok(Event::InstallFound)),
            (Some(&newer), false, false, None, None, false, Err(Class::Incompatible)),
            (Some(&newer), false, false, None, None, true, Ok(Event::InstallFound)),
            (Some(&older), false, false, None, Some(&h5), false, Err(Class::Incompatible)),
            (Some(&foreign), false, false, None, None, true, Err(Class::Incompatible)),
        ];
        for (i, (installed, running_here, root_empty, tree_problems, highest, allow, want)) in
            cases.into_iter().enumerate()
        {
            let s = Survey {
                bundle: &bundle,
                installed,
                running_here,
                root_empty,
                tree_problems,
                highest,
                allow_downgrade: allow,
                root: "/r",
            };
            assert_eq!(detect(&s).map_err(|e| e.class), want, "row {i}");
        }
    }

    #[test]
    fn the_root_chain_never_goes_back_unless_forced() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let cases = [
            (2, &a, None, false, None),
            (3, &a, Some((3, a)), false, None),
            (4, &b, Some((3, a)), false, None),
            (2, &a, Some((3, a)), false, Some(Class::Incompatible)),
            (2, &a, Some((3, a)), true, None),
            (3, &b, Some((3, a)), false, Some(Class::Verify)),
            (3, &b, Some((3, a)), true, None),
            (1, &b, Some((1, a)), false, None),
        ];
        for (i, (v, sha, highest, allow, want)) in cases.into_iter().enumerate() {
            assert_eq!(root_rollback((v, sha), highest, allow).err().map(|e| e.class), want, "row {i}");
        }
    }

    #[test]
    fn the_tree_is_checked_only_for_this_bundle_not_known_running() {
        let (a, b) = (manifest("2.0", "x"), manifest("1.0", "x"));
        let cases = [(Some(&a), false, true), (Some(&a), true, false), (Some(&b), false, false), (None, false, false)];
        for (installed, running, want) in cases {
            assert_eq!(Survey::needs_tree_check(&a, installed, running), want);
        }
    }

    #[test]
    fn five_failed_runs_in_a_row_give_up_unless_retried() {
        let cp = |states: &[State], id: &str| Checkpoint {
            bundle_id: id.into(),
            version: String::new(),
            payload_sha256: String::new(),
            root: String::new(),
            state: State::Failed,
            history: states.iter().map(|&state| HistoryRecord { at: 0, state }).collect(),
            last_error: Some("boom".into()),
            join: None,
            staging: None,
        };
        use State::*;
        let five = [Failed, Verifying, Failed, Failed, Failed, Failed];
        let cases: &[(&[State], &str, bool, Option<usize>)] = &[
            (&five, "b", false, Some(5)),
            (&five, "b", true, None),
            (&five, "other", false, None),
            (&[Failed, Failed, Failed, Failed], "b", false, None),
            (&[Failed, Failed, Running, Failed, Failed, Failed, Failed], "b", false, None),
            (&[Failed, Failed, Failed, Failed, SafeMode, Failed], "b", false, None),
        ];
        for (history, id, retry, gave_up) in cases {
            let c = cp(history, "b");
            let r = give_up(&c, id, *retry);
            match gave_up {
                Some(n) => {
                    let e = r.unwrap_err();
                    assert_eq!(e.class, Class::GaveUp);
                    assert!(e.msg.contains(&format!("failed {n} runs")), "{}", e.msg);
                }
                None => assert!(r.is_ok(), "{history:?} {id} {retry}"),
            }
            assert!(failed_runs(&c) <= history.len());
        }
    }
}
