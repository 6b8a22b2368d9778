%% Runs every exported `*_test/0' function of the given modules, each in
%% its own process with a time limit, and ends with the line
%% "N passed, N failed" (halting with 1 if any failed).
-module(fixture_test_runner).
-export([run/1]).

-define(LIMIT, 60000).

run(Modules) ->
    Tests = [{M, F} || M <- Modules, {F, 0} <- M:module_info(exports),
                       lists:suffix("_test", atom_to_list(F))],
    Results = [run_one(M, F) || {M, F} <- Tests],
    Passed = length([ok || ok <- Results]),
    Failed = length(Results) - Passed,
    io:format("~b passed, ~b failed~n", [Passed, Failed]),
    halt(case Failed of 0 -> 0; _ -> 1 end).

run_one(M, F) ->
    io:format("~s:~s ... ", [M, F]),
    T0 = erlang:monotonic_time(millisecond),
    {Pid, Ref} = spawn_monitor(fun() -> M:F(), exit(passed) end),
    Result = receive
                 {'DOWN', Ref, process, Pid, passed} -> ok;
                 {'DOWN', Ref, process, Pid, Reason} -> {failed, Reason}
             after ?LIMIT ->
                       exit(Pid, kill),
                       {failed, timeout}
             end,
    Ms = erlang:monotonic_time(millisecond) - T0,
    case Result of
        ok -> io:format("ok (~b ms)~n", [Ms]);
        {failed, Why} -> io:format("FAILED (~b ms)~n  ~tp~n", [Ms, Why])
    end,
    Result.
