//! `Fleet`: K simulated vehicles moving along the embedded routes, stepped once per tick.
//! Pure and deterministic for a seed: the same seed and the same tick times give the same
//! batches. Every observation gets a new object id; a vehicle's track id never changes.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::feature::{Feature, FieldType, FieldValue, GeometryType, Schema};
use crate::geometry::{Geometry, Route, Wkid};
use crate::source::Batch;

struct Vehicle {
    track_id: i64,
    route: usize,
    distance_m: f64,
    cruise_kmh: f64,
    speed_kmh: f64,
    stopped_ticks: u32,
    name: Arc<str>,
    trail: VecDeque<[f64; 2]>,
}

/// The simulated fleet.
pub struct Fleet {
    schema: Schema,
    routes: Vec<(Arc<str>, Route)>,
    vehicles: Vec<Vehicle>,
    rng: StdRng,
    next_object_id: i64,
    tick: u64,
    trail_vertices: usize,
    status_moving: Arc<str>,
    status_stopped: Arc<str>,
}

impl Fleet {
    /// A fleet of `count` vehicles for `schema` on the embedded routes, seeded.
    pub fn new(schema: Schema, count: usize, seed: u64, trail_vertices: usize) -> Fleet {
        Fleet::on_routes(schema, count, seed, trail_vertices, None)
    }

    /// A fleet on `routes` (checked: each has two distinct vertices), or the embedded ones.
    pub fn on_routes(
        schema: Schema,
        count: usize,
        seed: u64,
        trail_vertices: usize,
        routes: Option<&super::NamedRoutes>,
    ) -> Fleet {
        let named = routes.cloned().unwrap_or_else(super::embedded_routes);
        let routes: Vec<(Arc<str>, Route)> = named
            .into_iter()
            .filter_map(|(name, vertices)| Some((Arc::from(name.as_str()), Route::new(vertices)?)))
            .collect();
        assert!(!routes.is_empty(), "a fleet needs a route");
        let mut rng = StdRng::seed_from_u64(seed);
        let vehicles = (0..count)
            .map(|index| {
                let route = index % routes.len();
                let cruise_kmh = rng.random_range(20.0..120.0_f64).round();
                Vehicle {
                    track_id: index as i64 + 1,
                    route,
                    distance_m: rng.random_range(0.0..routes[route].1.length_m()),
                    cruise_kmh,
                    speed_kmh: cruise_kmh,
                    stopped_ticks: 0,
                    name: Arc::from(format!("vehicle-{}", index + 1)),
                    trail: VecDeque::with_capacity(trail_vertices.max(2)),
                }
            })
            .collect();
        Fleet {
            schema,
            routes,
            vehicles,
            rng,
            next_object_id: 1,
            tick: 0,
            trail_vertices: trail_vertices.max(2),
            status_moving: Arc::from("moving"),
            status_stopped: Arc::from("stopped"),
        }
    }

    /// Advances every vehicle by `elapsed_s` and returns one observation each.
    pub fn step(&mut self, elapsed_s: f64, observed_ms: i64) -> Batch {
        self.tick += 1;
        let mut features = Vec::with_capacity(self.vehicles.len());
        for index in 0..self.vehicles.len() {
            self.move_vehicle(index, elapsed_s);
            features.push(self.observe(index, observed_ms));
        }
        Batch {
            features,
            observed_ms,
        }
    }

    fn move_vehicle(&mut self, index: usize, elapsed_s: f64) {
        let stop_now = self.rng.random_bool(0.01);
        let jitter = self.rng.random_range(-5.0..5.0_f64);
        let vehicle = &mut self.vehicles[index];
        if vehicle.stopped_ticks > 0 {
            vehicle.stopped_ticks -= 1;
            vehicle.speed_kmh = 0.0;
        } else if stop_now {
            vehicle.stopped_ticks = 5;
            vehicle.speed_kmh = 0.0;
        } else {
            vehicle.speed_kmh = (vehicle.cruise_kmh + jitter).clamp(5.0, 130.0);
        }
        vehicle.distance_m += vehicle.speed_kmh / 3.6 * elapsed_s;
    }

    fn observe(&mut self, index: usize, observed_ms: i64) -> Feature {
        let object_id = self.next_object_id;
        self.next_object_id += 1;
        let vehicle = &mut self.vehicles[index];
        let (route_name, route) = &self.routes[vehicle.route];
        let (x, y, heading) = route.position_at(vehicle.distance_m);
        if vehicle.trail.len() == self.trail_vertices {
            vehicle.trail.pop_front();
        }
        vehicle.trail.push_back([x, y]);
        // Every 13th observation has no status: the nullable field is sometimes NULL.
        let status = if (vehicle.track_id as u64 + self.tick).is_multiple_of(13) {
            FieldValue::Null
        } else if vehicle.speed_kmh > 0.0 {
            FieldValue::String(self.status_moving.clone())
        } else {
            FieldValue::String(self.status_stopped.clone())
        };
        let attributes = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(field_index, field)| {
                if field_index == self.schema.object_id_field() {
                    return FieldValue::Integer(object_id);
                }
                if field_index == self.schema.track_id_field() {
                    return match field.field_type {
                        FieldType::String => FieldValue::String(vehicle.name.clone()),
                        _ => FieldValue::Integer(vehicle.track_id),
                    };
                }
                match (field.name.to_ascii_lowercase().as_str(), field.field_type) {
                    (_, FieldType::Date) => FieldValue::Date(observed_ms),
                    ("speed", _) => FieldValue::Double((vehicle.speed_kmh * 10.0).round() / 10.0),
                    ("heading", _) => FieldValue::Double((heading * 10.0).round() / 10.0),
                    ("route", FieldType::String) => FieldValue::String(route_name.clone()),
                    ("status", FieldType::String) => status.clone(),
                    (_, FieldType::String) => FieldValue::String(vehicle.name.clone()),
                    (_, FieldType::Boolean) => FieldValue::Boolean(vehicle.speed_kmh > 0.0),
                    (_, FieldType::Double | FieldType::Single) => {
                        FieldValue::Double(vehicle.cruise_kmh)
                    }
                    (_, _) => FieldValue::Integer(vehicle.track_id % 100),
                }
            })
            .collect();
        let to_schema = |[x, y]: [f64; 2]| {
            let (x, y) = Wkid::Wgs84.project(self.schema.wkid, x, y);
            [x, y]
        };
        let geometry = match self.schema.geometry_type {
            GeometryType::Point => {
                let [x, y] = to_schema([x, y]);
                Geometry::Point { x, y }
            }
            GeometryType::Polyline => {
                let mut path: Vec<[f64; 2]> =
                    vehicle.trail.iter().copied().map(to_schema).collect();
                if path.len() == 1 {
                    path.push(path[0]);
                }
                Geometry::Polyline { paths: vec![path] }
            }
            GeometryType::Polygon => Geometry::Polygon {
                rings: vec![footprint(x, y).into_iter().map(to_schema).collect()],
            },
        };
        Feature {
            attributes,
            geometry,
        }
    }
}

/// Radius of a polygon service's footprint around each vehicle, in metres.
const FOOTPRINT_RADIUS_M: f64 = 150.0;
/// Vertices of the footprint ring (before the closing vertex).
const FOOTPRINT_VERTICES: usize = 12;

/// A polygon service's observation: the area around a vehicle at WGS84 `x`, `y`, as one
/// closed ring, clockwise as Esri JSON wants outer rings.
fn footprint(x: f64, y: f64) -> Vec<[f64; 2]> {
    const METRES_PER_DEGREE: f64 = 111_320.0;
    let dy = FOOTPRINT_RADIUS_M / METRES_PER_DEGREE;
    let dx = dy / y.to_radians().cos().max(0.01);
    let mut ring: Vec<[f64; 2]> = (0..FOOTPRINT_VERTICES)
        .map(|vertex| {
            // Decreasing angles: clockwise with x east and y north.
            let angle = -std::f64::consts::TAU * vertex as f64 / FOOTPRINT_VERTICES as f64;
            [x + dx * angle.cos(), y + dy * angle.sin()]
        })
        .collect();
    ring.push(ring[0]);
    ring
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::vehicles_schema;

    #[test]
    fn the_same_seed_gives_the_same_batches() {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let mut first = Fleet::new(schema.clone(), 50, 7, 4);
        let mut second = Fleet::new(schema.clone(), 50, 7, 4);
        for tick in 0..5 {
            assert_eq!(
                first.step(1.0, tick).features,
                second.step(1.0, tick).features
            );
        }
        let mut other = Fleet::new(schema, 50, 8, 4);
        assert_ne!(first.step(1.0, 9).features, other.step(1.0, 9).features);
    }

    #[test]
    fn object_ids_are_new_and_track_ids_stable() {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let mut fleet = Fleet::new(schema, 3, 1, 4);
        let first = fleet.step(1.0, 0);
        let second = fleet.step(1.0, 1);
        let ids = |batch: &Batch, field: usize| -> Vec<FieldValue> {
            batch
                .features
                .iter()
                .map(|feature| feature.attributes[field].clone())
                .collect()
        };
        assert_eq!(
            ids(&first, 0),
            vec![
                FieldValue::Integer(1),
                FieldValue::Integer(2),
                FieldValue::Integer(3)
            ]
        );
        assert_eq!(
            ids(&second, 0),
            vec![
                FieldValue::Integer(4),
                FieldValue::Integer(5),
                FieldValue::Integer(6)
            ]
        );
        assert_eq!(ids(&first, 1), ids(&second, 1));
    }

    #[test]
    fn polyline_services_emit_trails() {
        let schema = vehicles_schema(GeometryType::Polyline, Wkid::Wgs84);
        let mut fleet = Fleet::new(schema, 2, 1, 3);
        for tick in 0..5 {
            fleet.step(1.0, tick);
        }
        let batch = fleet.step(1.0, 5);
        let Geometry::Polyline { paths } = &batch.features[0].geometry else {
            panic!("polyline")
        };
        assert_eq!(paths[0].len(), 3);
    }

    #[test]
    fn polygon_services_emit_closed_clockwise_rings_around_each_vehicle() {
        let mut points = Fleet::new(vehicles_schema(GeometryType::Point, Wkid::Wgs84), 3, 1, 4);
        let mut polygons = Fleet::new(vehicles_schema(GeometryType::Polygon, Wkid::Wgs84), 3, 1, 4);
        let (points, polygons) = (points.step(1.0, 0), polygons.step(1.0, 0));
        for (point, polygon) in points.features.iter().zip(&polygons.features) {
            let Geometry::Point { x, y } = point.geometry else {
                panic!("point")
            };
            let Geometry::Polygon { rings } = &polygon.geometry else {
                panic!(
                    "a polygon service emits polygons, got {:?}",
                    polygon.geometry
                )
            };
            assert_eq!(rings.len(), 1);
            let ring = &rings[0];
            assert_eq!(ring.len(), FOOTPRINT_VERTICES + 1);
            assert_eq!(ring.first(), ring.last(), "closed");
            // Shoelace: negative twice-area is clockwise.
            let twice_area: f64 = ring
                .windows(2)
                .map(|pair| pair[0][0] * pair[1][1] - pair[1][0] * pair[0][1])
                .sum();
            assert!(twice_area < 0.0, "clockwise");
            let (min_x, max_x) = ring.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| {
                (lo.min(v[0]), hi.max(v[0]))
            });
            let (min_y, max_y) = ring.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| {
                (lo.min(v[1]), hi.max(v[1]))
            });
            assert!(
                min_x < x && x < max_x && min_y < y && y < max_y,
                "around the vehicle"
            );
            assert!(max_y - min_y < 0.01, "a footprint, not a region");
        }
    }
}
