%% bench_ref: the native Erlang references that `make bench` measures migctl
%% against. Loaded on the bench's own nodes only (never part of migctl).
-module(bench_ref).
-export([dets_pull/3, ets_pull/3, ets_page/3]).

%% dets_pull(Node, Tab, Batch) -> {Rows, Micros}
%% An Erlang node reading every row of a DETS table on Node with rpc:call
%% and select continuations, Batch rows per call.
dets_pull(Node, Tab, Batch) ->
    T0 = erlang:monotonic_time(microsecond),
    N = dets_loop(rpc:call(Node, dets, select, [Tab, [{'_', [], ['$_']}], Batch]), Node, 0),
    {N, erlang:monotonic_time(microsecond) - T0}.

dets_loop('$end_of_table', _, N) -> N;
dets_loop({badrpc, R}, _, _) -> exit(R);
dets_loop({Rows, Cont}, Node, N) ->
    dets_loop(rpc:call(Node, dets, select, [Cont]), Node, N + length(Rows)).

%% ets_pull(Node, Tab, Batch): the same over the local ETS table of a
%% Mnesia disc_copies table, paging with ets_page/3 on Node.
ets_pull(Node, Tab, Batch) ->
    T0 = erlang:monotonic_time(microsecond),
    N = ets_loop(rpc:call(Node, ?MODULE, ets_page, [Tab, start, Batch]), Node, Tab, Batch, 0),
    {N, erlang:monotonic_time(microsecond) - T0}.

ets_loop({Rows, done}, _, _, _, N) -> N + length(Rows);
ets_loop({badrpc, R}, _, _, _, _) -> exit(R);
ets_loop({Rows, Cont}, Node, Tab, Batch, N) ->
    ets_loop(rpc:call(Node, ?MODULE, ets_page, [Tab, Cont, Batch]), Node, Tab, Batch, N + length(Rows)).

ets_page(Tab, start, Batch) -> page(ets:select(Tab, [{'_', [], ['$_']}], Batch));
ets_page(Tab, Cont, _) -> page(ets:select(ets:repair_continuation(Cont, [{'_', [], ['$_']}]))).

page('$end_of_table') -> {[], done};
page({Rows, '$end_of_table'}) -> {Rows, done};
page({Rows, Cont}) -> {Rows, Cont}.
