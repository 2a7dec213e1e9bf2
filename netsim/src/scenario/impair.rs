//! Putting a step's fault into a running lab, and undoing every fault put in so far (a
//! `heal = "all"` step). Each fault is one call of [`crate::lab::faults`] or of the overlay's
//! router control; this module only keeps the undo list.

use crate::lab::faults::ShapeUpdate;
use crate::lab::shaping::Proto;
use crate::lab::Lab;
use crate::model::plan::{ImpairPlan, Shape};
use crate::overlay_run::Overlay;

/// The faults in force, in the order they were put in.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    applied: Vec<ImpairPlan>,
}

fn no_overlay(node: &str) -> String {
    format!("the lab runs no overlay routers, so there is no router on {node} to stop or start")
}

impl Faults {
    /// Puts `fault` in.
    pub(crate) async fn apply(
        &mut self,
        lab: &Lab,
        overlay: Option<&mut Overlay>,
        fault: &ImpairPlan,
    ) -> Result<(), String> {
        match fault {
            ImpairPlan::Shape { x, y, changes } => {
                let mut update = ShapeUpdate::default();
                for (k, v) in changes {
                    update.set(k, v)?;
                }
                lab.set_link(x, y, &update, false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())?;
            }
            ImpairPlan::Cut { x, y } => lab.cut(x, y).await.map_err(|e| e.to_string())?,
            ImpairPlan::Partition { left, right } => {
                let l: Vec<&str> = left.iter().map(String::as_str).collect();
                let r: Vec<&str> = right.iter().map(String::as_str).collect();
                lab.partition(&l, &r).await.map_err(|e| e.to_string())?;
            }
            ImpairPlan::Block { node, proto, port } => {
                let p = Proto::parse(proto).ok_or_else(|| format!("unknown protocol {proto}"))?;
                lab.block(node, p, *port).await.map_err(|e| e.to_string())?;
            }
            ImpairPlan::Drop { node, rule } => lab
                .drop_packets(node, *rule)
                .await
                .map_err(|e| e.to_string())?,
            ImpairPlan::Kill { node } => {
                let o = overlay.ok_or_else(|| no_overlay(node))?;
                o.kill(node).map_err(|e| e.to_string())?;
            }
            ImpairPlan::Restart { node } => {
                let o = overlay.ok_or_else(|| no_overlay(node))?;
                o.restart(lab, node).await.map_err(|e| e.to_string())?;
            }
        }
        self.applied.push(fault.clone());
        Ok(())
    }

    /// Undoes every fault in force, newest first: links get their planned shape back and are
    /// healed, partitions, blocks and packet filters are lifted, killed routers start again.
    pub(crate) async fn heal_all(
        &mut self,
        lab: &Lab,
        mut overlay: Option<&mut Overlay>,
    ) -> Result<(), String> {
        let mut problems = Vec::new();
        while let Some(fault) = self.applied.pop() {
            let undone = match &fault {
                ImpairPlan::Shape { x, y, .. } => restore_shape(lab, x, y).await,
                ImpairPlan::Cut { x, y } => lab.heal_link(x, y).await.map_err(|e| e.to_string()),
                ImpairPlan::Partition { .. } => lab.heal().await.map_err(|e| e.to_string()),
                ImpairPlan::Block { node, proto, port } => match Proto::parse(proto) {
                    Some(p) => lab.unblock(node, p, *port).await.map_err(|e| e.to_string()),
                    None => Ok(()),
                },
                ImpairPlan::Drop { node, rule } => lab
                    .undrop_packets(node, *rule)
                    .await
                    .map_err(|e| e.to_string()),
                ImpairPlan::Kill { node } => match overlay.as_deref_mut() {
                    Some(o) => o.restart(lab, node).await.map_err(|e| e.to_string()),
                    None => Err(no_overlay(node)),
                },
                ImpairPlan::Restart { .. } => Ok(()),
            };
            if let Err(e) = undone {
                problems.push(format!("undo {}: {e}", fault.describe()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Gives the link between `x` and `y` back the shape its plan has (no shape: unimpaired).
async fn restore_shape(lab: &Lab, x: &str, y: &str) -> Result<(), String> {
    let link = lab
        .plan()
        .links
        .iter()
        .find(|l| (l.a.node == x && l.b.node == y) || (l.a.node == y && l.b.node == x))
        .ok_or_else(|| format!("no link between {x} and {y}"))?;
    let (a, b) = (link.a.node.clone(), link.b.node.clone());
    let shape = link.shape.clone().unwrap_or_default();
    for (from, to, dir) in [(&a, &b, &shape.a_to_b), (&b, &a, &shape.b_to_a)] {
        lab.set_link(from, to, &update_to(dir), true)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The update that turns any shape into `shape`.
fn update_to(shape: &Shape) -> ShapeUpdate {
    ShapeUpdate {
        clear: true,
        rate_bps: Some(shape.rate_bps),
        delay_ns: Some(shape.delay_ns),
        jitter_ns: Some(shape.jitter_ns),
        distribution: Some(shape.distribution),
        loss_ppm: Some(shape.loss_ppm),
        loss_correlation_ppm: Some(shape.loss_correlation_ppm),
        reorder_ppm: Some(shape.reorder_ppm),
        duplicate_ppm: Some(shape.duplicate_ppm),
        corrupt_ppm: Some(shape.corrupt_ppm),
        limit: Some(shape.limit),
    }
}
