//! Links that stay inside the root: each target on its own
//! ([`link_target_ok`]), and every chain of links followed through the
//! tree the manifest declares ([`check_link_chains`]).

use super::*;

/// True if a link at `path` pointing at `target` stays inside the root:
/// a relative target, no empty or control-character parts, and `..` never
/// climbing above the root when resolved from the link's directory. This
/// reads the target alone, as if no component of it were a link;
/// [`check_link_chains`] then follows the links on its way.
pub fn link_target_ok(path: &EntryPath, target: &str) -> bool {
    if target.is_empty() || target.len() > crate::path::MAX_PATH_LEN || target.starts_with('/') {
        return false;
    }
    if target.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
        return false;
    }
    let mut depth = path.components().count() as i64 - 1;
    for c in target.split('/') {
        match c {
            // A `.` part would be respelled by tar writers (`a/./b` is
            // written `a/b`), so the tar header could not say what the
            // signed line says; one spelling only.
            "" | "." => return false,
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Most links that following one link may take, counting itself: Linux's
/// `MAXSYMLINKS`, past which the kernel fails with `ELOOP` anyway.
pub const MAX_LINK_CHAIN: u32 = 40;

/// Why a link is refused once the links on its way are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChainError {
    /// Position of the refused link in the entries given.
    pub index: usize,
    pub path: EntryPath,
    pub target: String,
    pub kind: LinkChainErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChainErrorKind {
    /// Resolving the target climbs above the root, once the links on its
    /// way (the last one followed is `via`) are followed.
    Escapes { via: Option<EntryPath> },
    /// The target runs into a loop of links, through `at`.
    Loop { at: EntryPath },
    /// Following the link takes more than [`MAX_LINK_CHAIN`] links.
    TooLong,
}

impl fmt::Display for LinkChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link `{}` -> `{}`: ", self.path, self.target)?;
        match &self.kind {
            LinkChainErrorKind::Escapes { via: Some(via) } => {
                write!(f, "climbs above the root once the link `{via}` on its way is followed")
            }
            LinkChainErrorKind::Escapes { via: None } => write!(f, "climbs above the root"),
            LinkChainErrorKind::Loop { at } => write!(f, "runs into a loop of links at `{at}`"),
            LinkChainErrorKind::TooLong => write!(f, "following it takes more than {MAX_LINK_CHAIN} links"),
        }
    }
}

impl std::error::Error for LinkChainError {}

/// Checks every link with the links on its way followed, as the kernel
/// would follow them: the target's components are walked from the link's
/// directory, and a component that names another link of `entries` is
/// replaced by where that link leads (resolved the same way, so `..` after
/// it climbs from there, not from the link). A link is refused if that walk
/// climbs above the root, runs into a loop, or follows more than
/// [`MAX_LINK_CHAIN`] links. Components are matched by the name rule
/// ([`crate::path::name_key`]), as a case-insensitive filesystem matches
/// them; a component that names nothing in `entries` is taken as a plain
/// directory, since no link of the bundle's can be there. Order does not
/// matter: a link may go through a link listed
/// after it, as the bundler's path order often has it (`bin/tool ->
/// ../lib/cur/tool` before `lib/cur -> v2`).
///
/// `entries` are `(path, Some(target))` for a link and `(path, None)` for
/// anything else, with paths unique under the name rule and every target
/// passing [`link_target_ok`].
///
/// # Security
/// [`link_target_ok`] alone is lexical: from `a/`, `l1/..` stays inside,
/// but if `a/l1` is a link to `..` it leads above the root. This catches
/// such chains. Work is linear in the targets' lengths: each link is
/// resolved once and remembered.
pub fn check_link_chains<'a>(
    entries: impl IntoIterator<Item = (&'a EntryPath, Option<&'a str>)>,
) -> Result<(), LinkChainError> {
    let mut tree = Tree::default();
    for (index, (path, target)) in entries.into_iter().enumerate() {
        let mut node = 0;
        for c in path.components() {
            node = tree.child_or_insert(node, c);
        }
        if let Some(target) = target {
            tree.nodes[node].link = Some(tree.links.len());
            tree.links.push(Link {
                index,
                path: path.clone(),
                target: target.to_string(),
                node,
                state: State::Unresolved,
            });
        }
    }
    for link in 0..tree.links.len() {
        tree.resolve(link, link, 0)?;
    }
    Ok(())
}

/// Where a walk stands: a node of the manifest's tree, then `unknown`
/// components below it that the manifest does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    node: usize,
    unknown: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Unresolved,
    InProgress,
    /// Where the link leads, and how many links following it takes
    /// (itself not counted).
    Done(Position, u32),
}

#[derive(Debug)]
struct Link {
    index: usize,
    path: EntryPath,
    target: String,
    node: usize,
    state: State,
}

#[derive(Debug, Default)]
struct Node {
    parent: usize,
    link: Option<usize>,
}

/// The manifest's paths as a tree, children found by their name key.
#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
    children: std::collections::HashMap<(usize, String), usize>,
    links: Vec<Link>,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree { nodes: vec![Node::default()], children: Default::default(), links: Vec::new() }
    }
}

impl Tree {
    fn child_or_insert(&mut self, parent: usize, name: &str) -> usize {
        let key = (parent, crate::path::name_key(name));
        if let Some(&n) = self.children.get(&key) {
            return n;
        }
        self.nodes.push(Node { parent, link: None });
        self.children.insert(key, self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    fn error(&self, link: usize, kind: LinkChainErrorKind) -> LinkChainError {
        let l = &self.links[link];
        LinkChainError { index: l.index, path: l.path.clone(), target: l.target.clone(), kind }
    }

    /// Resolves link `link`, reached through `depth` links from `top`, the
    /// link being checked.
    fn resolve(&mut self, link: usize, top: usize, depth: u32) -> Result<(Position, u32), LinkChainError> {
        match &self.links[link].state {
            State::Done(pos, count) => return Ok((*pos, *count)),
            State::InProgress => {
                let at = self.links[link].path.clone();
                return Err(self.error(top, LinkChainErrorKind::Loop { at }));
            }
            State::Unresolved if depth >= MAX_LINK_CHAIN => return Err(self.error(top, LinkChainErrorKind::TooLong)),
            State::Unresolved => {}
        }
        self.links[link].state = State::InProgress;
        let mut pos = Position { node: self.nodes[self.links[link].node].parent, unknown: 0 };
        let (mut count, mut via) = (0u32, None);
        let target = self.links[link].target.clone();
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." if pos.unknown > 0 => pos.unknown -= 1,
                ".." if pos.node == 0 => return Err(self.error(link, LinkChainErrorKind::Escapes { via })),
                ".." => pos.node = self.nodes[pos.node].parent,
                _ if pos.unknown > 0 => pos.unknown += 1,
                name => match self.children.get(&(pos.node, crate::path::name_key(name))) {
                    None => pos.unknown = 1,
                    Some(&n) => match self.nodes[n].link {
                        None => pos.node = n,
                        Some(next) => {
                            let (to, more) = self.resolve(next, top, depth + 1)?;
                            count = count.saturating_add(1 + more);
                            if count >= MAX_LINK_CHAIN {
                                return Err(self.error(link, LinkChainErrorKind::TooLong));
                            }
                            pos = to;
                            via = Some(self.links[next].path.clone());
                        }
                    },
                },
            }
        }
        self.links[link].state = State::Done(pos, count);
        Ok((pos, count))
    }
}
