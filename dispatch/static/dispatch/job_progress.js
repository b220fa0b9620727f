/* A job's page (dispatch/templates/admin/dispatch/job/detail.html) kept current while the job runs.
 *
 * Asks the job's progress URL every data-poll milliseconds and changes only the text and values that changed:
 * nothing is re-rendered, so the keyboard focus, the selection and the scroll position stay where they were, and
 * the status line (role="status") is announced only when the state or the summary really changes. Stops once the
 * job is done or failed; after a failed request it waits five times as long and tries again.
 */
(function () {
  "use strict";
  var root = document.querySelector("[data-progress-url]");
  if (!root || root.getAttribute("data-running") !== "1") {
    return;
  }
  var url = root.getAttribute("data-progress-url");
  var every = Number(root.getAttribute("data-poll")) || 1000;

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(id, value) {
    var element = byId(id);
    if (element && element.textContent !== String(value)) {
      element.textContent = String(value);
    }
  }

  function setProblems(data) {
    var list = byId("job-problems");
    if (list.children.length !== data.problems.length) {
      var items = data.problems.map(function (problem) {
        var item = document.createElement("li");
        item.textContent = problem;
        return item;
      });
      list.replaceChildren.apply(list, items);
    }
    setText("job-problem-count", data.problem_count);
    byId("job-problems-more").hidden = data.problem_count <= data.problems.length;
    byId("job-no-problems").hidden = data.problem_count > 0;
  }

  function show(data) {
    var bar = byId("job-progress");
    if (bar.max !== data.total) {
      bar.max = data.total;
    }
    if (bar.value !== data.done) {
      bar.value = data.done;
      bar.textContent = data.percent + "%";
    }
    setText("job-count", data.count);
    setText("job-state", data.state_label);
    setText("job-summary", data.summary);
    setText("job-started", data.started);
    setText("job-finished", data.finished);
    setProblems(data);
    root.setAttribute("data-running", data.running ? "1" : "0");
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        show(data);
        if (data.running) {
          window.setTimeout(poll, every);
        }
      })
      .catch(function () {
        window.setTimeout(poll, every * 5);
      });
  }

  window.setTimeout(poll, every);
})();
