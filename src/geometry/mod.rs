//! Plain f64 geometry: spatial references and projection, envelopes, feature shapes and the
//! spatial relations of the ArcGIS envelope filter, polyline routes for the simulator.
//! No I/O, no JSON, no actix.
//!
//! Spatial relations (`spatialRel`) between the filter envelope E and a feature F:
//! - `esriSpatialRelIntersects` (default): F and E share at least one point.
//! - `esriSpatialRelEnvelopeIntersects`: F's bounding box and E share at least one point.
//! - `esriSpatialRelContains`: E contains F (every point of F is inside E or on its boundary).
//! - `esriSpatialRelWithin`: E lies within F; only a polygon can hold an envelope, so for lines
//!   this is never true. For points the ArcGIS stream service docs treat every relation as
//!   "inside or on the boundary", and so do we: for a point feature all four relations agree.

mod envelope;
mod projection;
mod route;

pub use envelope::{Envelope, EnvelopeError, EnvelopeInput};
pub use projection::{
    MAX_MERCATOR_LATITUDE, SUPPORTED_WKIDS, UnsupportedWkid, Wkid, lon_lat_to_mercator,
    mercator_to_lon_lat,
};
pub use route::Route;

/// A feature's shape. Coordinates are `[x, y]` in the owning schema's reference.
#[derive(Clone, Debug, PartialEq)]
pub enum Geometry {
    /// A single position.
    Point {
        /// Longitude or easting.
        x: f64,
        /// Latitude or northing.
        y: f64,
    },
    /// One or more paths.
    Polyline {
        /// Each path has at least two vertices.
        paths: Vec<Vec<[f64; 2]>>,
    },
    /// One or more closed rings (first vertex repeated last).
    Polygon {
        /// Outer rings and holes, even-odd rule.
        rings: Vec<Vec<[f64; 2]>>,
    },
}

/// The polygons of an Esri ring list: each clockwise ring (an outer ring, as Esri draws
/// them) starts a polygon and each counterclockwise ring (a hole) joins the polygon before it
/// (a hole before any outer ring is taken as an outer ring). GeoJSON needs this grouping.
pub fn polygons_of_rings(rings: &[Vec<[f64; 2]>]) -> Vec<Vec<&Vec<[f64; 2]>>> {
    let mut polygons: Vec<Vec<&Vec<[f64; 2]>>> = Vec::new();
    for ring in rings {
        let twice_area: f64 = ring
            .windows(2)
            .map(|pair| pair[0][0] * pair[1][1] - pair[1][0] * pair[0][1])
            .sum();
        match polygons.last_mut() {
            Some(polygon) if twice_area > 0.0 => polygon.push(ring),
            _ => polygons.push(vec![ring]),
        }
    }
    polygons
}

/// The `spatialRel` of an envelope filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SpatialRel {
    /// `esriSpatialRelIntersects`, the default.
    #[default]
    Intersects,
    /// `esriSpatialRelEnvelopeIntersects`.
    EnvelopeIntersects,
    /// `esriSpatialRelContains`: the envelope contains the feature.
    Contains,
    /// `esriSpatialRelWithin`: the envelope lies within the feature.
    Within,
}

impl SpatialRel {
    /// Parses `esriSpatialRel*` (case-insensitive, prefix optional).
    pub fn parse(text: &str) -> Option<SpatialRel> {
        let name = text.trim();
        let name = if name.len() >= 14 && name[..14].eq_ignore_ascii_case("esriSpatialRel") {
            &name[14..]
        } else {
            name
        };
        [
            ("Intersects", SpatialRel::Intersects),
            ("EnvelopeIntersects", SpatialRel::EnvelopeIntersects),
            ("Contains", SpatialRel::Contains),
            ("Within", SpatialRel::Within),
        ]
        .into_iter()
        .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
        .map(|(_, relation)| relation)
    }

    /// The `esriSpatialRel*` name.
    pub fn esri_name(self) -> &'static str {
        match self {
            SpatialRel::Intersects => "esriSpatialRelIntersects",
            SpatialRel::EnvelopeIntersects => "esriSpatialRelEnvelopeIntersects",
            SpatialRel::Contains => "esriSpatialRelContains",
            SpatialRel::Within => "esriSpatialRelWithin",
        }
    }
}

impl Geometry {
    /// The bounding box, or `None` for a shape with no finite vertex.
    pub fn bounding_box(&self) -> Option<Envelope> {
        match self {
            Geometry::Point { x, y } => Envelope::new(*x, *y, *x, *y).ok(),
            Geometry::Polyline { paths: parts } | Geometry::Polygon { rings: parts } => {
                let mut vertices = parts.iter().flatten();
                let first = vertices.next()?;
                let (mut xmin, mut ymin, mut xmax, mut ymax) =
                    (first[0], first[1], first[0], first[1]);
                for [x, y] in vertices {
                    xmin = xmin.min(*x);
                    ymin = ymin.min(*y);
                    xmax = xmax.max(*x);
                    ymax = ymax.max(*y);
                }
                Envelope::new(xmin, ymin, xmax, ymax).ok()
            }
        }
    }

    /// Whether the feature satisfies `relation` with `envelope` (see the module docs).
    ///
    /// ```
    /// use featurestream::geometry::{Envelope, Geometry, SpatialRel};
    /// let envelope = Envelope::new(0.0, 0.0, 10.0, 10.0).unwrap();
    /// let point = Geometry::Point { x: 10.0, y: 5.0 };
    /// assert!(point.relates(&envelope, SpatialRel::Intersects));
    /// let line = Geometry::Polyline { paths: vec![vec![[-5.0, 5.0], [5.0, 5.0]]] };
    /// assert!(line.relates(&envelope, SpatialRel::Intersects));
    /// assert!(!line.relates(&envelope, SpatialRel::Contains));
    /// ```
    pub fn relates(&self, envelope: &Envelope, relation: SpatialRel) -> bool {
        if let Geometry::Point { x, y } = self {
            return envelope.contains_point(*x, *y);
        }
        let Some(bounds) = self.bounding_box() else {
            return false;
        };
        match relation {
            SpatialRel::EnvelopeIntersects => bounds.intersects(envelope),
            SpatialRel::Contains => envelope.contains(&bounds),
            SpatialRel::Intersects => {
                bounds.intersects(envelope) && self.intersects_envelope(envelope)
            }
            SpatialRel::Within => match self {
                Geometry::Polygon { rings } => {
                    polygon_contains_point(rings, envelope.xmin(), envelope.ymin())
                        && !rings.iter().any(|ring| {
                            segments(ring).any(|(a, b)| segment_crosses_interior(a, b, envelope))
                        })
                }
                _ => false,
            },
        }
    }

    fn intersects_envelope(&self, envelope: &Envelope) -> bool {
        match self {
            Geometry::Point { x, y } => envelope.contains_point(*x, *y),
            Geometry::Polyline { paths } => paths.iter().any(|path| {
                path.iter().any(|[x, y]| envelope.contains_point(*x, *y))
                    || segments(path).any(|(a, b)| segment_intersects_envelope(a, b, envelope))
            }),
            Geometry::Polygon { rings } => {
                rings.iter().any(|ring| {
                    segments(ring).any(|(a, b)| segment_intersects_envelope(a, b, envelope))
                }) || polygon_contains_point(rings, envelope.xmin(), envelope.ymin())
            }
        }
    }
}

fn segments(vertices: &[[f64; 2]]) -> impl Iterator<Item = ([f64; 2], [f64; 2])> + '_ {
    vertices.windows(2).map(|pair| (pair[0], pair[1]))
}

/// Liang–Barsky clipping: does the closed segment touch the closed rectangle?
fn segment_intersects_envelope(a: [f64; 2], b: [f64; 2], envelope: &Envelope) -> bool {
    clip(a, b, envelope).is_some()
}

/// Does the segment pass through the open interior of the rectangle?
fn segment_crosses_interior(a: [f64; 2], b: [f64; 2], envelope: &Envelope) -> bool {
    let Some((t0, t1)) = clip(a, b, envelope) else {
        return false;
    };
    let middle = (t0 + t1) / 2.0;
    let x = a[0] + (b[0] - a[0]) * middle;
    let y = a[1] + (b[1] - a[1]) * middle;
    x > envelope.xmin() && x < envelope.xmax() && y > envelope.ymin() && y < envelope.ymax()
}

fn clip(a: [f64; 2], b: [f64; 2], envelope: &Envelope) -> Option<(f64, f64)> {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    let checks = [
        (-dx, a[0] - envelope.xmin()),
        (dx, envelope.xmax() - a[0]),
        (-dy, a[1] - envelope.ymin()),
        (dy, envelope.ymax() - a[1]),
    ];
    for (p, q) in checks {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
            if t0 > t1 {
                return None;
            }
        }
    }
    Some((t0, t1))
}

/// Even-odd point in polygon.
fn polygon_contains_point(rings: &[Vec<[f64; 2]>], x: f64, y: f64) -> bool {
    let mut inside = false;
    for ring in rings {
        for (a, b) in segments(ring) {
            if (a[1] > y) != (b[1] > y) && x < (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0] {
                inside = !inside;
            }
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> Envelope {
        Envelope::new(0.0, 0.0, 10.0, 10.0).unwrap()
    }

    #[test]
    fn points_use_inside_or_boundary_for_every_relation() {
        let relations = [
            SpatialRel::Intersects,
            SpatialRel::EnvelopeIntersects,
            SpatialRel::Contains,
            SpatialRel::Within,
        ];
        for relation in relations {
            assert!(Geometry::Point { x: 0.0, y: 10.0 }.relates(&unit(), relation));
            assert!(Geometry::Point { x: 5.0, y: 5.0 }.relates(&unit(), relation));
            assert!(!Geometry::Point { x: 10.1, y: 5.0 }.relates(&unit(), relation));
        }
    }

    #[test]
    fn polyline_relations() {
        let crossing = Geometry::Polyline {
            paths: vec![vec![[-5.0, 5.0], [15.0, 5.0]]],
        };
        let diagonal_miss = Geometry::Polyline {
            paths: vec![vec![[-5.0, 12.0], [12.0, 30.0]]],
        };
        let corner_cut = Geometry::Polyline {
            paths: vec![vec![[-1.0, 5.0], [5.0, 11.0]]],
        };
        let inside = Geometry::Polyline {
            paths: vec![vec![[1.0, 1.0], [9.0, 9.0]]],
        };
        // The bounding box of this L-shaped path overlaps the envelope, the path does not.
        let bbox_only = Geometry::Polyline {
            paths: vec![vec![[-5.0, 20.0], [-5.0, -5.0], [-1.0, -5.0]]],
        };
        assert!(crossing.relates(&unit(), SpatialRel::Intersects));
        assert!(!crossing.relates(&unit(), SpatialRel::Contains));
        assert!(!diagonal_miss.relates(&unit(), SpatialRel::Intersects));
        assert!(corner_cut.relates(&unit(), SpatialRel::Intersects));
        assert!(inside.relates(&unit(), SpatialRel::Contains));
        assert!(!inside.relates(&unit(), SpatialRel::Within));
        assert!(!bbox_only.relates(&unit(), SpatialRel::Intersects));
        let tall = Geometry::Polyline {
            paths: vec![vec![[-5.0, 20.0], [-5.0, -5.0], [1.0, -5.0]]],
        };
        assert!(tall.relates(&unit(), SpatialRel::EnvelopeIntersects));
        assert!(bbox_only.relates(
            &Envelope::new(-6.0, 0.0, 0.0, 1.0).unwrap(),
            SpatialRel::EnvelopeIntersects
        ));
    }

    #[test]
    fn polygon_relations() {
        let square = |min: f64, max: f64| Geometry::Polygon {
            rings: vec![vec![
                [min, min],
                [max, min],
                [max, max],
                [min, max],
                [min, min],
            ]],
        };
        assert!(square(-100.0, 100.0).relates(&unit(), SpatialRel::Within));
        assert!(square(-100.0, 100.0).relates(&unit(), SpatialRel::Intersects));
        assert!(!square(-100.0, 100.0).relates(&unit(), SpatialRel::Contains));
        assert!(square(2.0, 3.0).relates(&unit(), SpatialRel::Contains));
        assert!(!square(2.0, 3.0).relates(&unit(), SpatialRel::Within));
        assert!(!square(20.0, 30.0).relates(&unit(), SpatialRel::Intersects));
        assert!(square(5.0, 30.0).relates(&unit(), SpatialRel::Intersects));
        assert!(!square(5.0, 30.0).relates(&unit(), SpatialRel::Within));
    }

    #[test]
    fn spatial_rel_names_parse_case_insensitively() {
        assert_eq!(
            SpatialRel::parse("esriSpatialRelIntersects"),
            Some(SpatialRel::Intersects)
        );
        assert_eq!(
            SpatialRel::parse("ESRISPATIALRELWITHIN"),
            Some(SpatialRel::Within)
        );
        assert_eq!(
            SpatialRel::parse("envelopeintersects"),
            Some(SpatialRel::EnvelopeIntersects)
        );
        assert_eq!(SpatialRel::parse("esriSpatialRelTouches"), None);
    }
}
