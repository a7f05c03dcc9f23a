//! An R-tree over the envelopes of the groups that have one (docs/architecture.md "Envelope index"):
//! each feature is looked up once, so 10,000 sessions watching different map extents cost
//! O(features × log groups + matches) per batch, not O(features × groups).

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

use crate::feature::Feature;
use crate::geometry::{Envelope, Geometry};

type Entry = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// Candidate features per indexed group, rebuilt lazily after groups change.
#[derive(Default)]
pub struct EnvelopeIndex {
    tree: RTree<Entry>,
    hits: Vec<Vec<u32>>,
    dirty: bool,
}

impl EnvelopeIndex {
    /// Groups with envelopes changed: rebuild before the next batch.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether `rebuild` must run before `collect`.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Rebuilds from `(slot, envelope)` pairs; slots are `0..count`.
    pub fn rebuild(&mut self, envelopes: impl Iterator<Item = (usize, Envelope)>) {
        let entries: Vec<Entry> = envelopes
            .map(|(slot, envelope)| {
                let rectangle = Rectangle::from_corners(
                    [envelope.xmin(), envelope.ymin()],
                    [envelope.xmax(), envelope.ymax()],
                );
                GeomWithData::new(rectangle, slot)
            })
            .collect();
        let slots = entries
            .iter()
            .map(|entry| entry.data + 1)
            .max()
            .unwrap_or(0);
        self.tree = RTree::bulk_load(entries);
        self.hits.resize_with(slots, Vec::new);
        self.hits.truncate(slots);
        self.dirty = false;
    }

    /// For every indexed group, the features whose bounding box touches its envelope.
    pub fn collect(&mut self, features: &[Feature]) {
        for hits in &mut self.hits {
            hits.clear();
        }
        if self.tree.size() == 0 {
            return;
        }
        for (index, feature) in features.iter().enumerate() {
            match &feature.geometry {
                Geometry::Point { x, y } => {
                    for entry in self.tree.locate_all_at_point(&[*x, *y]) {
                        self.hits[entry.data].push(index as u32);
                    }
                }
                other => {
                    let Some(bounds) = other.bounding_box() else {
                        continue;
                    };
                    let query = AABB::from_corners(
                        [bounds.xmin(), bounds.ymin()],
                        [bounds.xmax(), bounds.ymax()],
                    );
                    for entry in self.tree.locate_in_envelope_intersecting(&query) {
                        self.hits[entry.data].push(index as u32);
                    }
                }
            }
        }
    }

    /// Candidate feature indexes (ascending) of an indexed group.
    pub fn hits(&self, slot: usize) -> &[u32] {
        self.hits.get(slot).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(x: f64, y: f64) -> Feature {
        Feature {
            attributes: Vec::new(),
            geometry: Geometry::Point { x, y },
        }
    }

    #[test]
    fn points_on_the_boundary_and_inside_are_candidates() {
        let mut index = EnvelopeIndex::default();
        index.rebuild(
            [
                (0, Envelope::new(0.0, 0.0, 1.0, 1.0).unwrap()),
                (1, Envelope::new(0.5, 0.5, 2.0, 2.0).unwrap()),
            ]
            .into_iter(),
        );
        index.collect(&[
            point(0.0, 0.0),
            point(0.75, 0.75),
            point(1.5, 1.5),
            point(3.0, 3.0),
        ]);
        assert_eq!(index.hits(0), &[0, 1]);
        assert_eq!(index.hits(1), &[1, 2]);
        assert_eq!(index.hits(7), &[] as &[u32]);
    }
}
