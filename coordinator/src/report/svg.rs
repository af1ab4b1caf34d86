//! The flow graph as SVG, laid out in simple layers (no graphviz): each node's column is its
//! longest path from a source, nodes stacked in a column in definition order.

use std::fmt::Write;

use super::graph::{state_colour, FlowGraph, NodeKind, StepStates};

const COLUMN: usize = 210;
const ROW: usize = 74;
const WIDTH: usize = 160;
const HEIGHT: usize = 50;
const MARGIN: usize = 20;

/// Each node's layer: the longest path to it from a node without incoming edges (cycles are
/// cut off after as many rounds as there are nodes).
fn layers(graph: &FlowGraph) -> Vec<usize> {
    let mut layer = vec![0usize; graph.nodes.len()];
    for _ in 0..graph.nodes.len() {
        let mut changed = false;
        for edge in &graph.edges {
            if edge.from != edge.to && layer[edge.to] < layer[edge.from] + 1 {
                layer[edge.to] = layer[edge.from] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

/// The top-left corner of every node.
fn positions(graph: &FlowGraph) -> Vec<(usize, usize)> {
    let layer = layers(graph);
    let mut filled = vec![0usize; graph.nodes.len() + 1];
    layer
        .iter()
        .map(|&l| {
            let row = filled[l];
            filled[l] += 1;
            (MARGIN + l * COLUMN, MARGIN + row * ROW)
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document.
pub fn to_svg(graph: &FlowGraph, states: &StepStates) -> String {
    let at = positions(graph);
    let width = at.iter().map(|p| p.0).max().unwrap_or(0) + WIDTH + 2 * MARGIN;
    let height = at.iter().map(|p| p.1).max().unwrap_or(0) + HEIGHT + 2 * MARGIN;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"flow-graph\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n"
    );
    for edge in &graph.edges {
        draw_edge(&mut out, at[edge.from], at[edge.to], edge);
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        draw_node(&mut out, at[i], node, states);
    }
    out.push_str("</svg>\n");
    out
}

fn draw_edge(
    out: &mut String,
    from: (usize, usize),
    to: (usize, usize),
    edge: &super::graph::Edge,
) {
    let (x1, y1) = (from.0 + WIDTH, from.1 + HEIGHT / 2);
    let (x2, y2) = (to.0, to.1 + HEIGHT / 2);
    let dash = if edge.dashed {
        " stroke-dasharray=\"4 3\""
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#555\"{dash} marker-end=\"url(#arrow)\"/>"
    );
    if let Some(label) = &edge.label {
        let (mx, my) = ((x1 + x2) / 2, (y1 + y2) / 2);
        let _ = writeln!(
            out,
            "<text x=\"{mx}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\" font-size=\"10\">{}</text>",
            my.saturating_sub(3),
            escape(label)
        );
    }
}

fn draw_node(
    out: &mut String,
    (x, y): (usize, usize),
    node: &super::graph::Node,
    states: &StepStates,
) {
    // Only a step has tasks; an event of the same name has none.
    let counts = states
        .get(&node.name)
        .filter(|_| node.kind == NodeKind::Step);
    let state = match node.kind {
        NodeKind::Step => counts.map_or("none", |c| c.state()),
        _ => "event",
    };
    let fill = if node.kind == NodeKind::Step {
        state_colour(state)
    } else {
        "#eeeeee"
    };
    let rx = match node.kind {
        NodeKind::Step => 4,
        NodeKind::Event => HEIGHT / 2,
        NodeKind::Expr => 12,
    };
    let _ = writeln!(
        out,
        "<g class=\"node {}\" data-name=\"{}\" data-state=\"{state}\"><title>{}</title>\
         <rect x=\"{x}\" y=\"{y}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"#333\"/>",
        kind_class(node.kind),
        escape(&node.name),
        escape(&tooltip(node, counts))
    );
    let mut lines = vec![node.name.clone()];
    lines.extend(node.detail.clone());
    if let Some(c) = counts {
        lines.push(format!(
            "{}/{} done, {} failed",
            c.done(),
            c.total(),
            c.failure
        ));
    }
    for (i, line) in lines.iter().take(3).enumerate() {
        let weight = if i == 0 { " font-weight=\"bold\"" } else { "" };
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\"{weight}>{}</text>",
            x + WIDTH / 2,
            y + 16 + i * 14,
            escape(&shorten(line, 26))
        );
    }
    out.push_str("</g>\n");
}

fn kind_class(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Event => "event",
        NodeKind::Expr => "expr",
        NodeKind::Step => "step",
    }
}

fn tooltip(node: &super::graph::Node, counts: Option<&super::model::Counts>) -> String {
    let mut text = node.name.clone();
    if let Some(detail) = &node.detail {
        text.push_str(&format!(" {detail}"));
    }
    if let Some(c) = counts {
        for (status, n) in c.pairs() {
            text.push_str(&format!(" {status}={n}"));
        }
    }
    text
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max - 1).collect();
    format!("{cut}…")
}
