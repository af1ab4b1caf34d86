//! A flow as a graph — events, steps, associations (with their delays), the events steps
//! fire, expression events with their operands — printed as dot or mermaid, and coloured by
//! a run's task states. `run` saves it beside the run's log so `serve` can draw it.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{Counts, RunReport};
use super::ReportError;
use crate::api::AssocTarget;
use crate::flow::FlowFile;

/// A node by kind and name: an event and a step may share a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'a> {
    Event(&'a str),
    Step(&'a str),
}

impl<'a> Key<'a> {
    fn of(node: &'a Node) -> Key<'a> {
        match node.kind {
            NodeKind::Event | NodeKind::Expr => Key::Event(&node.name),
            NodeKind::Step => Key::Step(&node.name),
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Event,
    /// An expression event; its label holds the expression.
    Expr,
    Step,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// What is drawn under the name: the expression, the host a step is pinned to.
    pub detail: Option<String>,
    /// The host (or `a|b` hosts) a step is pinned to.
    #[serde(default)]
    pub pinned: Option<String>,
}

/// An edge between two nodes (indices into [`FlowGraph::nodes`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// A delay (`5s`), the status that fires an event (`success`), or `operand`.
    pub label: Option<String>,
    /// Operand edges of expression events are drawn dashed.
    pub dashed: bool,
}

/// A flow's shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowGraph {
    pub flow: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

impl FlowGraph {
    /// The graph of a loaded flow file.
    pub fn of_flow(flow: &FlowFile) -> FlowGraph {
        let mut graph = FlowGraph {
            flow: flow.name.clone(),
            ..FlowGraph::default()
        };
        for event in &flow.events {
            let (kind, detail) = match &event.expr {
                Some(expr) => (NodeKind::Expr, Some(expr.to_string())),
                None => (NodeKind::Event, None),
            };
            graph.add(&event.name, kind, detail);
        }
        for step in &flow.steps {
            let pinned = step.host.clone().or_else(|| pinned_hosts(&step.hosts));
            graph.add(
                &step.name,
                NodeKind::Step,
                pinned.as_ref().map(|h| format!("@{h}")),
            );
            if let Some(node) = graph.nodes.last_mut() {
                node.pinned = pinned;
            }
        }
        graph.add_edges(flow);
        graph
    }

    /// A graph of only the steps a run has tasks of (when its flow's graph was not saved).
    pub fn of_tasks(report: &RunReport) -> FlowGraph {
        let mut graph = FlowGraph {
            flow: report.run.name.clone(),
            ..FlowGraph::default()
        };
        for stats in report.steps() {
            graph.add(&stats.step, NodeKind::Step, None);
        }
        graph
    }

    fn add(&mut self, name: &str, kind: NodeKind, detail: Option<String>) {
        self.nodes.push(Node {
            name: name.to_string(),
            kind,
            detail,
            pinned: None,
        });
    }

    fn add_edges(&mut self, flow: &FlowFile) {
        let index: HashMap<Key<'_>, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (Key::of(n), i))
            .collect();
        let mut edges = Vec::new();
        let mut link = |from: Key<'_>, to: Key<'_>, label: Option<String>, dashed: bool| {
            if let (Some(&from), Some(&to)) = (index.get(&from), index.get(&to)) {
                edges.push(Edge {
                    from,
                    to,
                    label,
                    dashed,
                });
            }
        };
        for event in &flow.events {
            for operand in event.expr.iter().flat_map(|e| e.events()) {
                link(Key::Event(operand), Key::Event(&event.name), None, true);
            }
        }
        for assoc in &flow.assocs {
            let delay = assoc
                .delay
                .map(|d| humantime::format_duration(d).to_string());
            for target in &assoc.targets {
                let to = match target {
                    AssocTarget::Step(name) => Key::Step(name),
                    AssocTarget::Event(name) => Key::Event(name),
                    // A bare name is a step or an event, not both (the file was checked).
                    AssocTarget::Named(name) if index.contains_key(&Key::Step(name)) => {
                        Key::Step(name)
                    }
                    AssocTarget::Named(name) => Key::Event(name),
                };
                link(Key::Event(&assoc.event), to, delay.clone(), false);
            }
        }
        for step in &flow.steps {
            let t = &step.triggers;
            let fired = [
                ("ready", &t.ready),
                ("active", &t.active),
                ("success", &t.success),
                ("failure", &t.failure),
                ("complete", &t.complete),
            ];
            for (status, events) in fired {
                for event in events {
                    let label = Some(status.to_string());
                    link(Key::Step(&step.name), Key::Event(event), label, false);
                }
            }
        }
        self.edges = edges;
    }

    /// Reads the graph `run` saved for `run_id` in `logdir`, if any.
    pub fn load_saved(logdir: &Path, flow: &str, run_id: &str) -> Option<FlowGraph> {
        let text = std::fs::read_to_string(saved_path(logdir, flow, run_id)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Saves the graph beside the run's log, for `serve`.
    pub fn save(&self, logdir: &Path, run_id: &str) -> Result<(), ReportError> {
        let path = saved_path(logdir, &self.flow, run_id);
        let failed = |source| ReportError::SaveGraph {
            run_id: run_id.to_string(),
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let text = serde_json::to_string(self).unwrap_or_default();
        // Written aside, then renamed: `serve` never reads half a graph.
        let aside = path.with_extension("graph.json.tmp");
        std::fs::write(&aside, text).map_err(failed)?;
        std::fs::rename(&aside, &path).map_err(failed)
    }
}

fn pinned_hosts(hosts: &[String]) -> Option<String> {
    (!hosts.is_empty()).then(|| hosts.join("|"))
}

impl FlowGraph {
    /// The host each pinned step is pinned to (`a|b` for a list of hosts).
    pub fn pins(&self) -> HashMap<String, String> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), n.pinned.clone()?)))
            .collect()
    }
}

/// `<logdir>/<flow>/<run_id>.graph.json`, beside the run's log.
pub fn saved_path(logdir: &Path, flow: &str, run_id: &str) -> PathBuf {
    crate::log::log_path(logdir, flow, run_id).with_extension("graph.json")
}

/// Each step's task counts, to colour the graph by (empty: no run).
pub type StepStates = HashMap<String, Counts>;

/// The step states of a run report.
pub fn states_of(report: &RunReport) -> StepStates {
    report
        .steps()
        .into_iter()
        .map(|s| (s.step, s.counts))
        .collect()
}

/// Fill colours of the step states (shared by dot, mermaid, svg and the page).
pub fn state_colour(state: &str) -> &'static str {
    match state {
        "failure" => "#f28b82",
        "active" => "#8ab4f8",
        "ready" => "#fdd663",
        "success" => "#81c995",
        _ => "#ffffff",
    }
}

fn node_label(node: &Node, states: &StepStates) -> String {
    let mut label = node.name.clone();
    if let Some(detail) = &node.detail {
        let _ = write!(label, "\n{detail}");
    }
    let counts = (node.kind == NodeKind::Step).then(|| states.get(&node.name));
    if let Some(counts) = counts.flatten() {
        let _ = write!(label, "\n{}/{} done", counts.done(), counts.total());
        if counts.failure > 0 {
            let _ = write!(label, ", {} failed", counts.failure);
        }
    }
    label
}

fn step_state(node: &Node, states: &StepStates) -> Option<&'static str> {
    (node.kind == NodeKind::Step && !states.is_empty())
        .then(|| states.get(&node.name).map_or("none", Counts::state))
}

/// Graphviz dot.
pub fn to_dot(graph: &FlowGraph, states: &StepStates) -> String {
    let quote = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", quote(&graph.flow));
    for (i, node) in graph.nodes.iter().enumerate() {
        let shape = match node.kind {
            NodeKind::Event => "ellipse",
            NodeKind::Expr => "diamond",
            NodeKind::Step => "box",
        };
        let fill = step_state(node, states)
            .map(|s| format!(", style=filled, fillcolor=\"{}\"", state_colour(s)))
            .unwrap_or_default();
        let label = quote(&node_label(node, states));
        let _ = writeln!(out, "  n{i} [shape={shape}, label=\"{label}\"{fill}];");
    }
    for edge in &graph.edges {
        let mut attrs = Vec::new();
        if let Some(label) = &edge.label {
            attrs.push(format!("label=\"{}\"", quote(label)));
        }
        if edge.dashed {
            attrs.push("style=dashed".into());
        }
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        };
        let _ = writeln!(out, "  n{} -> n{}{attrs};", edge.from, edge.to);
    }
    out.push_str("}\n");
    out
}

/// A mermaid flowchart.
pub fn to_mermaid(graph: &FlowGraph, states: &StepStates) -> String {
    let quote = |s: &str| s.replace('"', "#quot;").replace('\n', "<br/>");
    let mut out = String::from("flowchart LR\n");
    for (i, node) in graph.nodes.iter().enumerate() {
        let label = quote(&node_label(node, states));
        let _ = match node.kind {
            NodeKind::Event => writeln!(out, "  n{i}([\"{label}\"])"),
            NodeKind::Expr => writeln!(out, "  n{i}{{\"{label}\"}}"),
            NodeKind::Step => writeln!(out, "  n{i}[\"{label}\"]"),
        };
    }
    for edge in &graph.edges {
        let arrow = if edge.dashed { "-.->" } else { "-->" };
        let _ = match &edge.label {
            Some(label) => writeln!(
                out,
                "  n{} {arrow}|\"{}\"| n{}",
                edge.from,
                quote(label),
                edge.to
            ),
            None => writeln!(out, "  n{} {arrow} n{}", edge.from, edge.to),
        };
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if let Some(state) = step_state(node, states) {
            let _ = writeln!(out, "  style n{i} fill:{}", state_colour(state));
        }
    }
    out
}
