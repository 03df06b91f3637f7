//! `fvol inspect --format`: `docker inspect -f` habits on the JSON `inspect` prints. A
//! template is text with `{{.Field.Sub}}` (the value at that path) and `{{json .Field}}` (the
//! value as JSON) in it; a bare path `.Status.UsedBytes` is the same as `{{.Status.UsedBytes}}`.
//! Strings print as they are, numbers as integers, `null` as `<no value>` (as Go templates do),
//! and objects and arrays as JSON. An unknown field is an error naming the fields there are.
use serde_json::Value;

/// A parsed template: literal text and fields, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field { path: Vec<String>, json: bool },
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        if !text.contains("{{") && text.starts_with('.') {
            return Ok(Template {
                parts: vec![field(text, false)?],
            });
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(unescape(&rest[..open])));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("template {text:?}: a {{{{ without its }}}}"))?;
            let action = after[..close].trim();
            let part = match action.split_once(char::is_whitespace) {
                Some(("json", arg)) => field(arg.trim(), true)?,
                None => field(action, false)?,
                Some(_) => {
                    return Err(format!(
                        "template {text:?}: {{{{{action}}}}} is not understood; use {{{{.Field}}}}, \
                         {{{{.Field.Sub}}}} or {{{{json .Field}}}}"
                    ));
                }
            };
            parts.push(part);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(unescape(rest)));
        }
        Ok(Template { parts })
    }

    /// The template applied to one value (a volume as `inspect` shows it).
    pub fn render(&self, value: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field { path, json } => {
                    let found = lookup(value, path)?;
                    out.push_str(&match json {
                        true => serde_json::to_string(found).map_err(|e| e.to_string())?,
                        false => plain(found),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// `.A.B` as a field path; `.` alone is the whole value.
fn field(text: &str, json: bool) -> Result<Part, String> {
    let Some(path) = text.strip_prefix('.') else {
        return Err(format!(
            "{text:?} is not a field: fields start with a dot, as .Name or .Status.UsedBytes"
        ));
    };
    let path: Vec<String> = match path {
        "" => Vec::new(),
        _ => path.split('.').map(str::to_owned).collect(),
    };
    if path.iter().any(String::is_empty) {
        return Err(format!("{text:?}: an empty field name"));
    }
    Ok(Part::Field { path, json })
}

/// `\n` and `\t` as in docker's format strings.
fn unescape(text: &str) -> String {
    text.replace("\\n", "\n").replace("\\t", "\t")
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut here = value;
    for (depth, name) in path.iter().enumerate() {
        let at = || match depth {
            0 => String::new(),
            _ => format!(" in .{}", path[..depth].join(".")),
        };
        here = match here {
            Value::Object(fields) => match fields.get(name) {
                Some(v) => v,
                // Labels and options are the user's own keys: a missing one has no value.
                None if depth > 0 && matches!(path[depth - 1].as_str(), "Labels" | "Options") => {
                    &Value::Null
                }
                None => {
                    let valid: Vec<&str> = fields.keys().map(String::as_str).collect();
                    return Err(format!(
                        "no field {name:?}{}; valid fields are: {}",
                        at(),
                        valid.join(", ")
                    ));
                }
            },
            _ => return Err(format!("no field {name:?}{}: it has no fields", at())),
        };
    }
    Ok(here)
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(i)) => i.to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn volume() -> Value {
        json!({
            "Name": "data",
            "Labels": {"team": "web"},
            "Status": {"UsedBytes": 1_073_741_824u64, "SizeLimit": null, "MountRefs": ["cli"]},
        })
    }

    fn render(t: &str) -> Result<String, String> {
        Template::parse(t)?.render(&volume())
    }

    #[test]
    fn fields_print_plain_and_numbers_as_integers() {
        assert_eq!(render("{{.Status.UsedBytes}}").unwrap(), "1073741824");
        assert_eq!(render(".Status.UsedBytes").unwrap(), "1073741824");
        assert_eq!(
            render("{{.Name}}: {{ .Status.UsedBytes }}\\n").unwrap(),
            "data: 1073741824\n"
        );
        assert_eq!(render("{{.Status.SizeLimit}}").unwrap(), "<no value>");
        assert_eq!(render("{{json .Status.MountRefs}}").unwrap(), "[\"cli\"]");
        assert_eq!(
            render("{{.Labels.team}} {{.Labels.none}}").unwrap(),
            "web <no value>"
        );
        assert_eq!(render("{{json .Labels}}").unwrap(), "{\"team\":\"web\"}");
        assert_eq!(render("plain").unwrap(), "plain");
    }

    #[test]
    fn unknown_fields_name_the_valid_ones() {
        let e = render("{{.Status.Used}}").unwrap_err();
        assert!(e.contains("no field \"Used\" in .Status"), "{e}");
        assert!(
            e.contains("valid fields are: MountRefs, SizeLimit, UsedBytes"),
            "{e}"
        );
        let e = render("{{.Nme}}").unwrap_err();
        assert!(e.contains("valid fields are: Labels, Name, Status"), "{e}");
        let e = render("{{.Name.X}}").unwrap_err();
        assert!(e.contains("it has no fields"), "{e}");
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "{{.Name",
            "{{Name}}",
            "{{range .X}}",
            "{{.A..B}}",
            "{{json Name}}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
