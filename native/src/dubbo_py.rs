//! The Dubbo codec's Python surface, for InvokeService's dubbo channel: a request (plain
//! or Dubbo's generic `$invoke`) from Python values, and a response back to them.
//!
//! Values map as JSON would: None, bool, int (an int outside i32 is a long), float,
//! str, bytes, list, dict; a Java object is a dict of its fields with its class under
//! `"$class"` (both ways), a date comes back as milliseconds since the epoch.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::dubbo::{self, Invocation, Outcome};
use crate::hessian::Value;

const MAX_DEPTH: usize = 64;

fn to_value(object: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("value nested too deeply"));
    }
    if object.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = object.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if object.is_instance_of::<PyInt>() {
        let n: i64 = object
            .extract()
            .map_err(|_| PyValueError::new_err("an int beyond 64 bits has no Dubbo type"))?;
        return Ok(i32::try_from(n).map_or(Value::Long(n), Value::Int));
    }
    if let Ok(f) = object.cast::<PyFloat>() {
        return Ok(Value::Double(f.value()));
    }
    if let Ok(s) = object.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    if let Ok(b) = object.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(d) = object.cast::<PyDict>() {
        // {"$class": "com.example.Dto", field: value, ...} is a Java object.
        if let Some(class) = d.get_item("$class")? {
            let class_name: String = class.extract()?;
            let mut fields = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                let name: String = k.extract()?;
                if name != "$class" {
                    fields.push((name, to_value(&v, depth + 1)?));
                }
            }
            return Ok(Value::Object { class_name, fields });
        }
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            entries.push((to_value(&k, depth + 1)?, to_value(&v, depth + 1)?));
        }
        return Ok(Value::Map {
            type_name: None,
            entries,
        });
    }
    if object.is_instance_of::<PyList>() || object.is_instance_of::<PyTuple>() {
        let items = object
            .try_iter()?
            .map(|item| to_value(&item?, depth + 1))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Value::List {
            type_name: None,
            items,
        });
    }
    Err(PyValueError::new_err(format!(
        "a {} has no Dubbo type (use None, bool, int, float, str, bytes, list or dict)",
        object.get_type().name()?
    )))
}

fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(n) => n.into_pyobject(py)?.into_any(),
        Value::Long(n) | Value::Date(n) => n.into_pyobject(py)?.into_any(),
        Value::Double(x) => PyFloat::new(py, *x).into_any(),
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List { items, .. } => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map { entries, .. } => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                let key = to_python(py, k)?;
                // A key Python cannot hash (a list, a map) is keyed by its text.
                let key = if key.hash().is_ok() {
                    key
                } else {
                    key.str()?.into_any()
                };
                dict.set_item(key, to_python(py, v)?)?;
            }
            dict.into_any()
        }
        Value::Object { class_name, fields } => {
            if let Some(inner) = value_object(class_name, fields) {
                return to_python(py, inner);
            }
            let dict = PyDict::new(py);
            dict.set_item("$class", class_name)?;
            for (name, v) in fields {
                dict.set_item(name, to_python(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Java's value classes Hessian writes as an object of one field, `value`: what that field
/// holds stands for the object, as a `java.util.Date` is its milliseconds (Dubbo's generic
/// answers keep these as they are, and a JSON client expects a value, not a wrapper).
/// BigDecimal comes as its exact text, the `java.sql` dates as milliseconds. (Dubbo's
/// Hessian writes a BigInteger field by field, `signum` and `mag`: it stays an object.)
const VALUE_CLASSES: [&str; 4] = [
    "java.math.BigDecimal",
    "java.sql.Date",
    "java.sql.Time",
    "java.sql.Timestamp",
];

fn value_object<'v>(class_name: &str, fields: &'v [(String, Value)]) -> Option<&'v Value> {
    match fields {
        [(name, value)] if name == "value" && VALUE_CLASSES.contains(&class_name) => Some(value),
        _ => None,
    }
}

fn values_from(list: &Bound<'_, PyList>) -> PyResult<Vec<Value>> {
    list.iter().map(|item| to_value(&item, 0)).collect()
}

fn attachments_from(attachments: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, Value)>> {
    let Some(attachments) = attachments else {
        return Ok(Vec::new());
    };
    attachments
        .iter()
        .map(|(k, v)| Ok((k.extract::<String>()?, to_value(&v, 0)?)))
        .collect()
}

/// A two-way Dubbo request frame calling `method(args)` with parameter descriptor `param_types`.
// The Python signature mirrors Dubbo's invocation fields, one argument each.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (request_id, path, version, method, param_types, args, attachments = None))]
pub fn encode_dubbo_request<'py>(
    py: Python<'py>,
    request_id: u64,
    path: &str,
    version: &str,
    method: &str,
    param_types: &str,
    args: &Bound<'py, PyList>,
    attachments: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let args = values_from(args)?;
    // The descriptor is the caller's argument, not bytes off the wire: ValueError, not FrameError.
    let count =
        dubbo::parameter_count(param_types).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if count != args.len() {
        return Err(PyValueError::new_err(format!(
            "param_types {param_types:?} declares {count} parameters, {} args given",
            args.len()
        )));
    }
    let mut attachments = attachments_from(attachments)?;
    dubbo::add_default_attachments(&mut attachments, &[], path, version);
    let invocation = Invocation {
        dubbo_version: dubbo::DUBBO_VERSION.to_string(),
        path: path.to_string(),
        version: version.to_string(),
        method: method.to_string(),
        param_types: param_types.to_string(),
        args,
        attachments,
    };
    Ok(PyBytes::new(
        py,
        &dubbo::encode_request(request_id, &invocation, true),
    ))
}

/// A two-way generic call (`$invoke`): `method` with Java type names `arg_types`, which
/// a provider answers without the caller having its interface.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (request_id, path, version, method, arg_types, args, attachments = None))]
pub fn encode_dubbo_generic<'py>(
    py: Python<'py>,
    request_id: u64,
    path: &str,
    version: &str,
    method: &str,
    arg_types: Vec<String>,
    args: &Bound<'py, PyList>,
    attachments: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let args = values_from(args)?;
    if arg_types.len() != args.len() {
        return Err(PyValueError::new_err(format!(
            "{} arg types for {} args",
            arg_types.len(),
            args.len()
        )));
    }
    let invocation = dubbo::generic_invocation(
        path,
        version,
        method,
        arg_types,
        args,
        attachments_from(attachments)?,
    );
    Ok(PyBytes::new(
        py,
        &dubbo::encode_request(request_id, &invocation, true),
    ))
}

/// (status, outcome, value, attachments) of a response frame: outcome "value", "null",
/// "exception" (value: the thrown object) or "error" (a non-OK status; value: its message).
#[pyfunction]
pub fn decode_dubbo_response<'py>(
    py: Python<'py>,
    frame: &[u8],
) -> PyResult<(u8, &'static str, Bound<'py, PyAny>, Bound<'py, PyDict>)> {
    let reply = dubbo::decode_response(frame)?;
    let attachments = PyDict::new(py);
    for (k, v) in &reply.attachments {
        attachments.set_item(k, to_python(py, v)?)?;
    }
    let (outcome, value) = match &reply.outcome {
        Err(message) => ("error", PyString::new(py, message).into_any()),
        Ok(Outcome::Null) => ("null", py.None().into_bound(py)),
        Ok(Outcome::Value(v)) => ("value", to_python(py, v)?),
        Ok(Outcome::Exception(v)) => ("exception", to_python(py, v)?),
    };
    Ok((reply.status, outcome, value, attachments))
}
