//! Geometry in CAP text form: WGS 84 `lat,lon` pairs; a polygon is a whitespace-separated
//! list of pairs whose first and last pair are equal (at least four pairs); a circle is a
//! pair, a space and a radius in kilometres.

use std::fmt;

/// A WGS 84 coordinate pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

/// A closed ring of points (the first equals the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon(pub Vec<Point>);

/// A centre and a radius in kilometres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    pub center: Point,
    pub radius_km: f64,
}

impl Point {
    /// Whether the coordinates are finite and within WGS 84 ranges.
    pub fn is_valid(self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }

    pub(crate) fn parse(text: &str) -> Result<Point, String> {
        let (lat, lon) = text
            .split_once(',')
            .ok_or_else(|| format!("{text:?} is not a lat,lon pair"))?;
        let point = Point {
            lat: decimal(lat).ok_or_else(|| format!("latitude {lat:?} is not a number"))?,
            lon: decimal(lon).ok_or_else(|| format!("longitude {lon:?} is not a number"))?,
        };
        if !point.is_valid() {
            return Err(format!("{text:?} is outside WGS 84 ranges"));
        }
        Ok(point)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", Num(self.lat), Num(self.lon))
    }
}

impl Polygon {
    pub(crate) fn parse(text: &str) -> Result<Polygon, String> {
        let points = text
            .split_ascii_whitespace()
            .map(Point::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let polygon = Polygon(points);
        polygon.check()?;
        Ok(polygon)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.0.len() < 4 {
            return Err(format!(
                "a polygon needs at least 4 coordinate pairs, this one has {}",
                self.0.len()
            ));
        }
        if let Some(bad) = self.0.iter().find(|p| !p.is_valid()) {
            return Err(format!("point {bad} is outside WGS 84 ranges"));
        }
        if self.0.first() != self.0.last() {
            return Err("the first and last pairs of a polygon must be the same".into());
        }
        Ok(())
    }
}

impl fmt::Display for Polygon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, point) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{point}")?;
        }
        Ok(())
    }
}

impl Circle {
    pub(crate) fn parse(text: &str) -> Result<Circle, String> {
        let mut parts = text.split_ascii_whitespace();
        let (Some(center), Some(radius), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{text:?} is not \"lat,lon radius\""));
        };
        let circle = Circle {
            center: Point::parse(center)?,
            radius_km: decimal(radius)
                .ok_or_else(|| format!("radius {radius:?} is not a number"))?,
        };
        circle.check()?;
        Ok(circle)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.center.is_valid() {
            return Err(format!("centre {} is outside WGS 84 ranges", self.center));
        }
        if !(self.radius_km.is_finite() && self.radius_km >= 0.0) {
            return Err("a circle's radius must be a finite number of kilometres >= 0".into());
        }
        Ok(())
    }
}

impl fmt::Display for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.center, Num(self.radius_km))
    }
}

/// Writes a finite number as an `xs:decimal` (Rust never uses exponents in `Display`, and
/// its output parses back to the same `f64`); `-0` is written `0`.
pub(crate) struct Num(pub f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0.0 {
            f.write_str("0")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Parses an `xs:decimal` lexical form: optional sign, digits, optional fraction; no
/// exponent, no `NaN`/`INF`.
pub(crate) fn decimal(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let ok = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.bytes().all(|c| c.is_ascii_digit());
    if !ok {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}
